import json
import subprocess
import sys
from pathlib import Path

import pytest

from odyssey.project import Project
from tests.conftest import tiny_project


def _prefs_project(tmp_path, extra: str = ""):
    root = tiny_project(tmp_path / "p")
    topics = ["the bus", "lunch", "the report", "a meeting", "the weather", "a movie", "the bill", "my keys"]
    rows = [
        {
            "prompt": f"<s>user\nTell me about {t}.</s>\n<s>assistant\n",
            "chosen": f"Happy to help with {t}.",
            "rejected": f"Shut up, {t} is crap.",
        }
        for t in topics
    ]
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "odyssey.yaml").write_text((root / "odyssey.yaml").read_text() + extra)
    return Project.load(root), rows


def _lora_candidate(project, adapter: Path) -> Path:
    """An adapt-stage candidate 'tiny:lora': a (non-identity) LoRA adapter folder on tiny:llama."""
    import torch
    from peft import LoraConfig, get_peft_model

    from odyssey.models import load

    base = load("tiny:llama", dtype="float32")
    torch.manual_seed(0)
    peft = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(adapter)
    base.tokenizer.save_pretrained(adapter)
    (adapter / "odyssey-adapter.json").write_text(json.dumps({"base": "tiny:llama", "method": "lora"}))
    project.store.upsert_candidate(
        "tiny:lora",
        "adapt",
        str(adapter),
        {"prompt": {"task": "summarization", "instruction": "Summarize the dialogue."}},
    )
    return adapter


@pytest.mark.parametrize("reference_free", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_dpo_raises_chosen_over_rejected_and_links_the_candidate(tmp_path, reference_free):
    from odyssey.align.dpo import train_dpo
    from odyssey.align.preferences import build_preferences
    from odyssey.models import load
    from tests.align.logprobs import sequence_logprobs

    project, rows = _prefs_project(tmp_path, "align:\n  dpo: {epochs: 3, learning_rate: 0.005, batch_size: 4}\n")
    pset = build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    result = train_dpo(project, evaluate=False, reference_free=reference_free)
    cand = project.store.candidate(result.candidate)
    parent = project.store.candidate(cand["parent_id"])
    assert cand["stage"] == "align" and parent["name"] == result.parent
    assert cand["config"]["align"]["preference_sha256"] == pset.sha256
    assert cand["config"]["align"]["reference_free"] is reference_free
    prompts = [r["prompt"] for r in rows]
    margin = {}
    for name, ref in (("after", cand["model_ref"]), ("before", parent["model_ref"])):
        m = load(ref, dtype="float32")
        c = sequence_logprobs(m, prompts, [r["chosen"] for r in rows])
        r = sequence_logprobs(m, prompts, [r["rejected"] for r in rows])
        margin[name] = sum(a - b for a, b in zip(c, r)) / len(rows)
    assert margin["after"] > margin["before"] + 1.0


def test_cli_errors_are_clear(tmp_path):
    root = tiny_project(tmp_path / "p")
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *a, "-p", str(root)], capture_output=True, text=True
    )
    out = run("align", "reward")
    assert out.returncode == 2 and "no preference data" in out.stderr and "odyssey align prefs" in out.stderr
    out = run("align", "prefs", "--source", "file")
    assert out.returncode == 2 and "needs a path" in out.stderr
    out = run("align", "ppo", "--algo", "trpo")
    assert out.returncode == 2
    out = run("align", "compare", "nobody")
    assert out.returncode == 2 and "no candidate named 'nobody'" in out.stderr


@pytest.mark.slow
def test_lifecycle_prefs_reward_ppo_dpo_status(tmp_path):
    """The user's path on a tiny model: pairs from references and the metric, reward model, PPO, DPO, board."""
    root = tiny_project(tmp_path / "p")
    spec = (
        (root / "odyssey.yaml")
        .read_text()
        .replace("generation: {max_new_tokens: 60}", "generation: {max_new_tokens: 8}")
    )
    spec += (
        "align:\n  pairs: 10\n  preferences: [{kind: reference}, {kind: metric}]\n"
        "  ppo: {steps: 2, batch_size: 2, mini_batch_size: 2, ppo_epochs: 1, max_new_tokens: 8}\n"
        "  dpo: {epochs: 1, batch_size: 4}\n  eval_limit: 3\n"
    )
    (root / "odyssey.yaml").write_text(spec)
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *a, "-p", str(root), "--json"], capture_output=True, text=True
    )
    out = run("align", "prefs")
    assert out.returncode == 0, out.stderr
    prefs = json.loads(out.stdout)
    assert prefs["sources"]["reference"] >= 5
    out = run("align", "reward")
    assert out.returncode == 0, out.stderr
    assert 0 <= json.loads(out.stdout)["metrics"]["reward_accuracy"] <= 1
    out = run("align", "ppo")
    assert out.returncode == 0, out.stderr
    ppo = json.loads(out.stdout)
    metrics = ppo["evaluation"]["metrics"]
    assert {"win_rate", "kl", "rougeL_change", "toxicity"} <= set(metrics)
    assert metrics["win_rate_ci_low"] <= metrics["win_rate"] <= metrics["win_rate_ci_high"]
    out = run("align", "compare", ppo["candidate"], "--limit", "5")  # more test examples than align.eval_limit
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == 5 and ppo["evaluation"]["n"] == 3
    out = run("align", "dpo")
    assert out.returncode == 0, out.stderr
    out = run("status")
    board = json.loads(out.stdout)
    aligned = {c["name"]: c for c in board["candidates"] if c["stage"] == "align"}
    assert set(aligned) == {ppo["candidate"], json.loads(run("align", "dpo", "--no-eval").stdout)["candidate"]}
    assert all(c["parent"] == ppo["parent"] for c in aligned.values())
    assert "win_rate" in aligned[ppo["candidate"]]["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_trl_online_trainers_record_a_candidate(tmp_path, algo, capfd):
    from odyssey.align.dpo import trl_online

    project, _ = _prefs_project(tmp_path, "align:\n  ppo: {batch_size: 2, max_new_tokens: 6}\n")
    capfd.readouterr()
    result = trl_online(project, algo, reward="toxicity", steps=1, evaluate=False)
    printed = capfd.readouterr()
    assert "{'" not in printed.out + printed.err  # TRL's log dicts stay off the terminal: Odyssey's bar shows them
    cand = project.store.candidate(result.candidate)
    assert cand["stage"] == "align" and cand["config"]["align"]["method"] == algo
    assert cand["config"]["align"]["reward"] == "toxicity" and result.candidate.endswith(f"+{algo}")


def test_online_trainers_need_a_batch_of_whole_groups(tmp_path):
    from odyssey.align.dpo import trl_online
    from odyssey.errors import OdysseyError

    project, _ = _prefs_project(tmp_path, "align:\n  ppo: {batch_size: 3}\n")
    with pytest.raises(OdysseyError, match="must be a multiple of 2") as err:
        trl_online(project, "grpo", reward="toxicity", steps=1)
    assert "batch_size to 4" in err.value.hint
    project, _ = _prefs_project(tmp_path / "g4", "align:\n  ppo: {batch_size: 6, num_generations: 4}\n")
    with pytest.raises(OdysseyError, match="num_generations=4 answers per prompt") as err:
        trl_online(project, "rloo", reward="toxicity", steps=1)
    assert "batch_size to 8" in err.value.hint


def test_dpo_starts_from_a_lora_finetuned_candidate(tmp_path):
    """An adapt-stage candidate is a LoRA adapter: it is merged before DPO puts its own adapter on
    (TRL refuses a PeftModel together with a peft_config)."""
    from odyssey.align.dpo import train_dpo
    from odyssey.align.preferences import build_preferences
    from odyssey.models import load

    project, _ = _prefs_project(tmp_path, "align:\n  dpo: {epochs: 1, learning_rate: 0.001, batch_size: 4}\n")
    _lora_candidate(project, tmp_path / "adapter")
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    result = train_dpo(project, start="tiny:lora", evaluate=False)
    cand = project.store.candidate(result.candidate)
    assert result.parent == "tiny:lora" and project.store.candidate(cand["parent_id"])["name"] == "tiny:lora"
    aligned = load(cand["model_ref"], dtype="float32")
    assert not hasattr(aligned.model, "peft_config")  # saved as a plain checkpoint


def test_reward_model_trains_on_a_lora_finetuned_candidate(tmp_path):
    """The reward model's default backbone is the starting candidate; an adapt-stage LoRA adapter is
    merged into a plain backbone first (loaded as an adapter, every weight was frozen: nothing to train)."""
    from odyssey.align.preferences import build_preferences
    from odyssey.align.reward import train_reward_model

    project, _ = _prefs_project(tmp_path, "align:\n  reward: {epochs: 1, batch_size: 4, held_out: 0.25}\n")
    adapter = _lora_candidate(project, tmp_path / "adapter")
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    from odyssey.align.common import starting_candidate

    result = train_reward_model(project, start=starting_candidate(project, "tiny:lora"))
    assert result.base_ref == str(adapter)
    assert 0 <= result.metrics["reward_accuracy"] <= 1 and result.metrics["train_pairs"] == 6
    backbone = list((project.state_dir / "align").glob("reward-*/backbone"))
    assert len(backbone) == 1 and (backbone[0] / "config.json").exists()  # the merged backbone, saved once


def test_grad_accum_splits_a_step_into_micro_batches_and_still_learns(tmp_path):
    """batch_size 4, grad_accum 2: micro-batches of 2 pairs, the same 2 optimizer steps an epoch of 8 pairs
    as batch_size 4 alone (grouped at 4 and accumulated over 2, it would be 1)."""
    from odyssey.align.dpo import train_dpo
    from odyssey.align.preferences import build_preferences
    from tests.align.test_preference_methods import _margin

    spec = "align:\n  dpo: {epochs: 3, learning_rate: 0.005, batch_size: 4, grad_accum: 2}\n"
    project, rows = _prefs_project(tmp_path, spec)
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    result = train_dpo(project, evaluate=False)
    steps = sorted({h["step"] for h in result.history if "loss" in h})
    assert steps == [1, 2, 3, 4, 5, 6]
    cand = project.store.candidate(result.candidate)
    assert cand["config"]["align"]["grad_accum"] == 2
    parent = project.store.candidate(cand["parent_id"])
    assert _margin(cand["model_ref"], rows) > _margin(parent["model_ref"], rows) + 1.0


def test_grad_accum_that_does_not_split_the_batch_is_a_clear_error(tmp_path):
    from odyssey.errors import SpecError

    root = tiny_project(tmp_path / "p")
    (root / "odyssey.yaml").write_text(
        (root / "odyssey.yaml").read_text() + "align:\n  dpo: {batch_size: 4, grad_accum: 3}\n"
    )
    with pytest.raises(SpecError) as err:
        Project.load(root)
    text = str(err.value) + " ".join(getattr(err.value, "problems", []) or [])
    assert "odyssey.yaml" in text and "grad_accum" in text and "multiple of grad_accum" in text


def test_dpo_with_other_settings_reuses_the_reference_log_probs(tmp_path, monkeypatch):
    """The reference pass depends on the pairs and the start model only: a second DPO run with another
    grad_accum and learning rate reads every pair's log-probs from the shared cache, and trains the same
    pairs to the same first-step loss (log 2: the policy starts as the reference)."""
    import odyssey.training.preference as preference
    from odyssey.align.dpo import train_dpo
    from odyssey.align.preferences import build_preferences

    project, _ = _prefs_project(tmp_path, "align:\n  dpo: {epochs: 1, learning_rate: 0.005, batch_size: 4}\n")
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    calls = []
    real = preference.reference_logps
    monkeypatch.setattr(preference, "reference_logps", lambda m, g, c: calls.append(len(g)) or real(m, g, c))
    first = train_dpo(project, evaluate=False)
    (shared,) = (project.state_dir / "align").glob("reference-*.json")
    assert calls == [2] and len(json.loads(shared.read_text())["values"]) == 8
    spec = (project.root / "odyssey.yaml").read_text().replace("batch_size: 4}", "batch_size: 4, grad_accum: 2}")
    (project.root / "odyssey.yaml").write_text(spec.replace("learning_rate: 0.005", "learning_rate: 0.001"))
    second = train_dpo(Project.load(project.root), evaluate=False)
    assert calls == [2], "the second run computed reference log-probs again"
    losses = [[h["loss"] for h in r.history if "loss" in h][0] for r in (first, second)]
    assert losses[0] == pytest.approx(0.6931, abs=1e-3) and losses[1] == pytest.approx(0.6931, abs=1e-3)


def test_a_preference_run_that_cannot_fit_is_refused_before_any_work(tmp_path):
    """The memory check runs before the reference pass or a store run: on hardware too small for one
    micro-batch it names the settings and the grad_accum that would fit; on this machine the same run
    trains and records its estimate beside its measured peak."""
    from odyssey.align.dpo import memory_estimate_gb, train_dpo
    from odyssey.align.preferences import build_preferences
    from odyssey.errors import OdysseyError
    from odyssey.models import load
    from odyssey.training.preference import encode_pairs

    project, rows = _prefs_project(tmp_path, "align:\n  dpo: {epochs: 1, batch_size: 4}\n")
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    cfg = project.spec.align.dpo
    model = load("tiny:llama", dtype="float32")
    items, _ = encode_pairs(model.tokenizer, rows, cfg.max_length)
    one, four = (memory_estimate_gb(model.model, cfg, items, n) for n in (1, 4))
    assert 0 < one < four  # a smaller micro-batch needs less

    # usable = 90 % of the declared RAM: between the 1-pair and the 4-pair micro-batch
    ram_mb = (one + four) / 2 / 0.9 * 1024
    spec = project.root / "odyssey.yaml"
    text = spec.read_text()
    assert "    hardware: cpu\n" in text  # the template's
    spec.write_text(text.replace("    hardware: cpu\n", f"    hardware: 'cpu:2,ram:{ram_mb:.3f}mb'\n", 1))
    small = Project.load(project.root)
    assert small.spec.scope.constraints.hardware.startswith("cpu:2,ram:")
    runs_before = len(small.store.runs())
    with pytest.raises(OdysseyError) as err:
        train_dpo(small, evaluate=False)
    text = str(err.value) + " " + (err.value.hint or "")
    assert "align.dpo" in text and "micro-batch of 4" in text and "grad_accum" in text
    assert "align.dpo.grad_accum: " in (err.value.hint or "")  # the smallest split that fits
    assert len(small.store.runs()) == runs_before  # nothing recorded, no reference pass
    assert not list((small.state_dir / "align").glob("reference-*.json"))

    result = train_dpo(project, evaluate=False)
    metrics = project.store.latest_metrics(project.store.candidate(result.candidate)["id"])
    assert metrics["memory_estimate_gb"] == pytest.approx(four, abs=1e-3)
    assert metrics["train_peak_rss_gb"] > metrics["memory_estimate_gb"]  # the whole process: torch and all
