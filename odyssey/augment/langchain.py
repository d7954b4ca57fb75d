"""LangChain integration: an Odyssey collection as a LangChain retriever.

    from odyssey.project import Project
    from odyssey.augment.langchain import as_retriever
    retriever = as_retriever(Project.load("."), "handbook", k=4)
    docs = retriever.invoke("What is the refund window?")   # langchain_core Documents with citations

For the model, LangChain's own ``ChatOpenAI`` talks to ``odyssey serve`` (the deploy stage's
OpenAI-compatible server): ``ChatOpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY,
model=CANDIDATE)``; no Odyssey wrapper is needed for it. The retriever is a real
``BaseRetriever`` subclass, so it composes with LCEL (``retriever | format_docs | prompt | llm``),
callbacks and tracing. Odyssey's own pipelines keep their own small loops (batched generation,
the sandbox, traces in the store) rather than LangChain's, which run one question at a time.
"""

from __future__ import annotations


def as_retriever(
    project_or_collection,
    collection: str | None = None,
    *,
    k: int | None = None,
    mode: str | None = None,
    min_similarity: float | None = None,
):
    """A ``langchain_core`` retriever over a collection (needs ``pip install langchain-core``)."""
    from odyssey.augment.index import Collection
    from odyssey.errors import require

    require("langchain_core", "augment", "the LangChain retriever")
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict

    if isinstance(project_or_collection, Collection):
        coll, cfg = project_or_collection, None
    else:
        cfg = project_or_collection.spec.augment
        coll = Collection.for_project(project_or_collection, collection, must_exist=True)

    class OdysseyRetriever(BaseRetriever):
        """Hybrid (vector + BM25) retrieval from an Odyssey collection."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        collection: object
        k: int = 4
        mode: str = "hybrid"
        min_similarity: float | None = None

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            hits = self.collection.search(query, k=self.k, mode=self.mode)
            if self.min_similarity is not None:
                hits = [h for h in hits if h.similarity is not None and h.similarity >= self.min_similarity]
            return [
                Document(
                    page_content=h.text,
                    id=h.id,
                    metadata={
                        "source": h.source,
                        "section": h.section,
                        "page": h.page,
                        "title": h.title,
                        "citation": h.citation,
                        "similarity": h.similarity,
                        "score": h.score,
                    },
                )
                for h in hits
            ]

    return OdysseyRetriever(
        collection=coll,
        k=k or (cfg.top_k if cfg else 4),
        mode=mode or (cfg.retrieval if cfg else "hybrid"),
        min_similarity=min_similarity if min_similarity is not None else (cfg.min_similarity if cfg else None),
    )
