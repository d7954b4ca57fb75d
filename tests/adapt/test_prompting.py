import pytest

from odyssey.data import Example
from odyssey.models import load
from odyssey.project import Project
from odyssey.prompts import DemoSelector, PromptConfig, render
from tests.conftest import tiny_project

POOL = [
    Example("a", "#Person1#: I need a taxi to the airport.", ("#Person1# books a taxi.",)),
    Example("b", "#Person1#: The soup is cold. #Person2#: Sorry, I will heat it.", ("A cold soup.",)),
    Example("c", "#Person1#: Can I get a cab to the station?", ("#Person1# wants a cab.",)),
    Example("d", "#Person1#: Your rent is due Friday.", ("Rent is due.",)),
]


def test_selection_strategies():
    query = Example("q", "#Person1#: Please call me a taxi for the airport tomorrow.", ("x",))
    assert DemoSelector(POOL, "fixed", 2)(query) == POOL[:2]
    r1, r2 = DemoSelector(POOL, "random", 2, seed=3)(query), DemoSelector(POOL, "random", 2, seed=3)(query)
    assert r1 == r2 and len(set(e.id for e in r1)) == 2
    similar = DemoSelector(POOL, "similar", 2)(query)
    assert [e.id for e in similar] == ["a", "c"]  # the two taxi dialogues, by MiniLM cosine
    assert DemoSelector(POOL, "similar", 2)(POOL[0])[0].id != "a"  # never its own demo
    with pytest.raises(ValueError, match="at least 5 training examples"):
        DemoSelector(POOL, "fixed", 5)


def test_chat_template_used_and_demos_become_turns():
    tok = load("tiny:llama").tokenizer
    cfg = PromptConfig.default("summarization", shots=2)
    r = render(tok, cfg, POOL[3], POOL[:2], budget=10_000)
    assert r.text.count("<s>user") == 3 and r.text.count("<s>assistant") == 3  # 2 demos + the query, then gen prompt
    assert r.text.endswith("<s>assistant\n") and r.shots_used == 2 and not r.truncated_input


def test_context_overflow_drops_examples_first_then_truncates():
    tok = load("tiny:llama").tokenizer
    cfg = PromptConfig.default("summarization", shots=2)
    full = render(tok, cfg, POOL[3], POOL[:2], budget=10_000)
    one_fewer = render(tok, cfg, POOL[3], POOL[:2], budget=full.n_tokens - 1)
    assert one_fewer.shots_used < 2 and not one_fewer.truncated_input and one_fewer.n_tokens <= full.n_tokens - 1
    long = Example("l", "#Person1#: " + "words and more words " * 200, ("x",))
    tight = render(tok, cfg, long, POOL[:2], budget=120)
    assert tight.shots_used == 0 and tight.truncated_input and tight.n_tokens <= 120


def test_prompt_search_end_to_end_on_a_tiny_model(tmp_path):
    project = Project.load(tiny_project(tmp_path / "p"))
    result = project.prompt(shots=[0, 1], limit=3, test_limit=3)
    assert [v.name for v in result.variants] == ["zero-shot", "1-shot-fixed", "1-shot-similar"]
    best_score = max(v.metrics["rouge1"] for v in result.variants)
    assert result.best.metrics["rouge1"] == best_score
    cand = project.store.candidate("tiny-llama:prompt")
    assert cand["stage"] == "prompt" and cand["config"]["prompt"]["shots"] == result.best.shots
    assert set(project.store.latest_metrics(cand["id"], "test")) >= {"rouge1", "rougeL"}
    outputs = project.store.outputs(result.run_id)
    assert len(outputs) == 3 * 3 + 3  # every variant on validation + the best on test
    # The stored candidate re-evaluates with the same prompt config through `odyssey eval --candidate`.
    again = project.evaluate(candidate="tiny-llama:prompt", split="test", limit=3)
    assert again.metrics["rouge1"] == pytest.approx(result.test_metrics["rouge1"])
