"""lm-evaluation-harness's `local-chat-completions` model pointed at `odyssey serve`: a small local
generate_until task (no hub download) scored through the server."""

from __future__ import annotations

import json

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="pip install lm-eval")

TASK = """task: odyssey_echo
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow  # importing lm-eval and its task machinery takes a minute here
def test_lm_eval_local_chat_completions(server, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = tmp_path / "echo.jsonl"
    data.write_text("".join(json.dumps({"question": f"Say {w}.", "answer": w}) + "\n" for w in ("yes", "no", "maybe")))
    (tmp_path / "odyssey_echo.yaml").write_text(TASK.format(data=data))
    monkeypatch.setenv("OPENAI_API_KEY", server.keys["alice"])
    before = _count(server)
    out = simple_evaluate(
        model="local-chat-completions",
        model_args=f"model=tiny-b,base_url={server.url}/v1/chat/completions,num_concurrent=2,max_retries=1,"
        "tokenized_requests=False",
        tasks=["odyssey_echo"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        apply_chat_template=True,
        limit=3,
    )
    score = out["results"]["odyssey_echo"]["exact_match,none"]
    assert 0.0 <= score <= 1.0
    assert len(out["samples"]["odyssey_echo"]) == 3 if "samples" in out else True
    assert _count(server) - before == 3  # every harness request went through the gateway and was captured


def _count(server) -> int:
    from odyssey.store import deploy as sd

    project = server.project()
    n = sd.count_requests(project.store)
    project.store.close()
    return n
