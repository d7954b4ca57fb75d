"""Clients people already use, pointed at `odyssey serve` unchanged: LangChain's ChatOpenAI."""

from __future__ import annotations

import pytest

langchain_openai = pytest.importorskip("langchain_openai", reason="pip install langchain-openai")


def test_langchain_chat_openai_invoke_and_stream(server):
    from langchain_core.messages import HumanMessage, SystemMessage

    llm = langchain_openai.ChatOpenAI(
        base_url=server.url + "/v1",
        api_key=server.keys["alice"],
        model="tiny-b",
        temperature=0,
        max_tokens=8,
        max_retries=0,
    )
    msgs = [SystemMessage("Be brief."), HumanMessage("Summarize: A asks B about lunch; B says noon.")]
    answer = llm.invoke(msgs)
    assert isinstance(answer.content, str) and answer.usage_metadata["output_tokens"] <= 8
    streamed = "".join(chunk.content for chunk in llm.stream(msgs))
    assert streamed == answer.content  # greedy: the same text, streamed
    from odyssey.store import deploy as sd

    project = server.project()
    [row] = [r for r in sd.requests(project.store, limit=5) if r["output"] == answer.content][:1]
    assert row["candidate"] == "tiny-b" and row["prompt"][0] == {"role": "system", "content": "Be brief."}
    project.store.close()
