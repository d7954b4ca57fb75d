"""Output checks: copying, repetition, empty and truncated answers, length; the prompt search's
refusal to keep a copying variant; `odyssey eval` with no arguments evaluates the best candidate."""

from __future__ import annotations

from odyssey.evaluate.checks import check_outputs, copied_share, distinct_n, headline, repeats_phrase

DIALOGUE = (
    "#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today? #Person2#: I found it would be "
    "a good idea to get a check-up. #Person1#: Yes, well, you haven't had one for 5 years."
)


def _rows(predictions, reference="Mr. Smith gets a check-up from Doctor Hawkins."):
    return [{"example_id": str(i), "prediction": p, "references": [reference]} for i, p in enumerate(predictions)]


def test_an_answer_that_repeats_the_dialogue_is_a_copy_and_a_summary_is_not():
    echo = "#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today? #Person2#: I found it"
    summary = "Mr. Smith has not had a check-up for five years and sees Doctor Hawkins."
    assert copied_share(echo, DIALOGUE) == 1.0
    assert copied_share(summary, DIALOGUE) < 0.3
    checks = check_outputs(_rows([echo, echo, summary]), [DIALOGUE] * 3, ["length", "length", "stop"])
    assert checks.metrics["copy_rate"] == 2 / 3 and checks.copies_input
    assert checks.flagged["copy"] == ["0", "1"]
    assert checks.metrics["truncated_rate"] == 2 / 3
    warning = next(w for w in checks.warnings if "copy the input" in w)
    assert warning.startswith("2 of 3 answers copy the input")
    assert "[0] #Person1#: Hi, Mr. Smith" in warning and "[1]" in warning  # two examples shown
    # the one-line form (the prompt search's progress line, the ranking's note) ends at the claim
    assert headline(warning).endswith("not the task") and "example" not in headline(warning)


def test_short_label_answers_found_in_the_input_are_not_copies():
    checks = check_outputs(
        _rows(["billing", "technical"], "billing"), ["my billing is wrong", "technical issue"], ["stop", "stop"]
    )
    assert checks.metrics["copy_rate"] == 0 and not checks.warnings


def test_repetition_empty_and_length_checks():
    looping = "thank you thank you thank you thank you thank you"
    assert repeats_phrase(looping) and not repeats_phrase("a short and varied answer here")
    assert distinct_n(["a b a b"], 2) == 2 / 3
    checks = check_outputs(_rows([looping, "", looping]), ["x"] * 3, ["stop"] * 3)
    assert checks.metrics["repeat_rate"] == 2 / 3 and checks.metrics["empty_rate"] == 1 / 3
    assert any("repeat one phrase" in w for w in checks.warnings)
    assert any("empty" in w for w in checks.warnings)
    ref_words = 12  # mr . smith gets a check - up from doctor hawkins .  (words and punctuation)
    assert abs(checks.metrics["length_ratio"] - (2 * 10 / 3) / ref_words) < 1e-9


def test_prompt_search_never_keeps_a_copying_variant_while_another_exists():
    from odyssey.adapt.prompting import Variant, pick_best

    echo = Variant("zero-shot", 0, "fixed", {"rouge1": 0.26, "copy_rate": 0.98})
    real = Variant("3-shot-similar", 3, "similar", {"rouge1": 0.22, "copy_rate": 0.05})
    assert pick_best([echo, real], "rouge1") is real
    only_echo = Variant("1-shot", 1, "fixed", {"rouge1": 0.2, "copy_rate": 0.9})
    assert pick_best([echo, only_echo], "rouge1") is echo  # every variant copies: the best score, still warned


def test_harness_reports_the_checks_as_metrics_and_warnings():
    from odyssey.data import Example
    from odyssey.evaluate import run_harness
    from odyssey.models import load
    from odyssey.prompts import PromptConfig
    from odyssey.spec import Scope

    scope = Scope.model_validate({"task": "summarization", "data": {"source": "x"}})
    examples = [Example(str(i), f"#Person1#: question {i}", (f"answer {i}",)) for i in range(3)]
    cfg = PromptConfig.default("summarization", generation={"max_new_tokens": 6})
    result = run_harness(load("tiny:llama"), examples, cfg, scope)
    for key in ("copy_rate", "repeat_rate", "empty_rate", "truncated_rate", "distinct_2"):
        assert key in result.metrics
    assert set(result.warnings) <= set(result.notes)


def test_eval_without_arguments_evaluates_the_best_candidate(tmp_path):
    from odyssey.project import Project
    from odyssey.prompts import PromptConfig
    from tests.conftest import tiny_project

    project = Project.load(tiny_project(tmp_path / "proj"))
    first = project.evaluate(limit=2)
    assert first.candidate == "tiny-llama:zero-shot" or first.candidate.endswith(":zero-shot")
    cfg = PromptConfig.default("summarization", shots=1, generation={"max_new_tokens": 4})
    cand = project.store.upsert_candidate("tiny:kept-prompt", "prompt", "tiny:llama", {"prompt": cfg.as_dict()})
    with project.store.run("prompt", project.spec.as_dict(), {}) as run:
        run.log_metrics({"rougeL": 0.99, "rouge1": 0.99}, candidate_id=cand, split="test")
    again = project.evaluate(limit=2)
    assert again.candidate == "tiny:kept-prompt"
