"""Sentence embeddings with the packaged all-MiniLM-L6-v2 (sentence-transformers), or any
sentence-transformers model by path or hub id. Shared by example selection and retrieval.
"""

from __future__ import annotations

from functools import lru_cache

DEFAULT_EMBEDDER = "packaged:all-minilm-l6-v2"


@lru_cache(maxsize=4)
def embedder(ref: str = DEFAULT_EMBEDDER):
    from odyssey.errors import require

    st = require("sentence_transformers", "packaged", "embeddings")
    if ref.startswith("packaged:"):
        from odyssey.models.refs import PACKAGED, parse_ref

        path = PACKAGED[parse_ref(ref).value].weights_file().parent
        return st.SentenceTransformer(str(path), device="cpu")
    return st.SentenceTransformer(ref)


def embed(texts: list[str], ref: str = DEFAULT_EMBEDDER, batch_size: int = 32):
    """Unit-normalized embeddings (numpy, one row per text): cosine similarity is a dot product."""
    return embedder(ref).encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
