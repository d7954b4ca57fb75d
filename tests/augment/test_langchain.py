"""The LangChain retriever adapter over a real collection, composed in an LCEL chain."""

import pytest

pytest.importorskip("langchain_core")

from odyssey.augment.index import Collection  # noqa: E402
from odyssey.augment.langchain import as_retriever  # noqa: E402


def test_retriever_returns_documents_with_citations_and_composes(tmp_path):
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "stoves.md").write_text("# Stoves\n\n## Alpine\n\nThe Alpine stove is orange and weighs 310 grams.\n")
    (docs / "maps.txt").write_text("Maps\n\nThe Brenner loop map costs 9 euros.\n")
    coll = Collection(tmp_path / "c", "c", embedder="packaged:all-minilm-l6-v2")
    coll.ingest([docs], base=docs)
    retriever = as_retriever(coll, k=1, min_similarity=0.2)
    assert isinstance(retriever, BaseRetriever)
    found = retriever.invoke("What colour is the Alpine stove?")
    assert len(found) == 1 and "orange" in found[0].page_content
    assert found[0].metadata["citation"] == "stoves.md § Alpine" and found[0].metadata["similarity"] > 0.2
    assert retriever.invoke("superconducting magnets in particle accelerators") == []
    chain = retriever | RunnableLambda(lambda ds: "\n".join(f"[{d.metadata['source']}] {d.page_content}" for d in ds))
    assert chain.invoke("map price") == "[maps.txt] The Brenner loop map costs 9 euros."
