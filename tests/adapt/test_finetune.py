"""Fine-tuning end to end on tiny real models: methods, the store, evaluation, merge, resume, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from odyssey.models import load
from odyssey.project import Project
from tests.conftest import tiny_project


def _project(root: Path, model: str = "tiny:llama", extra: str = "") -> Project:
    """A tiny project; ``extra`` is an ``adapt:`` section. Short sequences keep the tests quick."""
    tiny_project(root, model)
    spec = (root / "odyssey.yaml").read_text().replace("max_new_tokens: 60", "max_new_tokens: 6")
    if extra:
        extra += "  max_seq_len: 96\n  batch_tokens: 384\n" + ("" if "val_limit" in extra else "  val_limit: 4\n")
    (root / "odyssey.yaml").write_text(spec + extra)
    return Project.load(root)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_finetune_records_a_linked_candidate_and_evaluates_it(tmp_path):
    project = _project(tmp_path / "p", extra="adapt:\n  method: lora\n  learning_rate: 0.01\n  save_every: 2\n")
    result = project_finetune(project, max_steps=4, limit=2)
    assert result.candidate == "tiny-llama:lora" and result.method == "lora"
    assert 0 < result.trainable_params < result.total_params and 0 < result.trainable_pct < 100
    assert result.steps == 4 and result.tokens > 0 and result.memory_estimate_gb > 0 and result.peak_memory_gb > 0
    assert result.val_loss["after"] < result.val_loss["before"]  # lr 0.01 on LoRA moves a tiny model fast

    store = project.store
    cand = store.candidate("tiny-llama:lora")
    parent = store.candidate(cand["parent_id"])
    assert parent["name"] == "tiny-llama:zero-shot" and parent["model_ref"] == "tiny:llama"
    assert cand["config"]["data_hash"] == result.data_hash and len(result.data_hash) == 16
    assert cand["config"]["train"]["max_steps"] == 4 and cand["config"]["method"] == "lora"
    assert cand["config"]["prompt"]["shots"] == 0
    for split in ("validation", "test"):
        assert {"rouge1", "rougeL"} <= set(store.latest_metrics(cand["id"], split))
    assert store.latest_metrics(cand["id"], "train")["trainable_params"] == result.trainable_params
    board = project.status()
    assert "tiny-llama:lora" in [c.name for c in board.candidates]

    # The saved adapter folder is a model ref like any other: odyssey.models.load gives the trained model.
    folder = Path(cand["model_ref"])
    assert (folder / "adapter_config.json").exists() and (folder / "odyssey-adapter.json").exists()
    reloaded = load(str(folder))
    base = load("tiny:llama")
    ids = torch.tensor([[5, 17, 99, 300, 12]])
    assert not torch.allclose(_logits(reloaded.model, ids), _logits(base.model, ids), atol=1e-4)
    # and `odyssey eval --candidate` scores it through the same harness
    again = project.evaluate(candidate="tiny-llama:lora", split="test", limit=2)
    assert again.metrics["rouge1"] == pytest.approx(result.metrics["test"]["rouge1"])

    # merge: a plain checkpoint with the same outputs, recorded as a child candidate
    from odyssey.adapt import merge

    merged = merge(project)
    assert merged.parent == "tiny-llama:lora"
    plain = load(merged.model_ref)
    assert (Path(merged.model_ref) / "config.json").exists()
    assert torch.allclose(_logits(plain.model, ids), _logits(reloaded.model, ids), atol=1e-4)
    row = store.candidate(merged.candidate)
    assert store.candidate(row["parent_id"])["name"] == "tiny-llama:lora"


def project_finetune(project, **kw):
    from odyssey.adapt import finetune

    return finetune(project, **kw)


def test_full_finetune_with_packing_uses_the_prompt_candidates_prompt_and_learns(tmp_path):
    project = _project(
        tmp_path / "p", extra="adapt:\n  method: full\n  learning_rate: 0.003\n  val_limit: 4\n  packing: pack\n"
    )
    # a prompt-stage candidate with its own instruction: fine-tuning must train on that prompt
    from odyssey.prompts import PromptConfig

    cfg = PromptConfig.default("summarization", instruction="Write a very short summary.", shots=3, selection="similar")
    project.store.upsert_candidate("tiny-llama:prompt", "prompt", "tiny:llama", {"prompt": cfg.as_dict()})
    result = project_finetune(project, max_steps=6, evaluate=False)
    assert result.trainable_params == result.total_params
    assert result.parent == "tiny-llama:prompt"
    assert project.store.runs("adapt")[0]["config"]["adapt"]["packing"] == "pack"
    assert result.val_loss["after"] < result.val_loss["before"] - 0.1
    cand = project.store.candidate("tiny-llama:full")
    assert cand["config"]["prompt"]["instruction"] == "Write a very short summary."
    assert cand["config"]["prompt"]["shots"] == 0  # trained and served zero-shot
    folder = Path(cand["model_ref"])
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert not project.store.latest_metrics(cand["id"], "test")  # evaluate=False


@pytest.mark.parametrize("model", ["tiny:llama", "tiny:t5"])
def test_prompt_tuning_trains_only_the_soft_prompt(tmp_path, model):
    project = _project(
        tmp_path / "p", model, extra="adapt:\n  method: prompt_tuning\n  prompt_tuning: {num_virtual_tokens: 6}\n"
    )
    result = project_finetune(project, max_steps=3, limit=1)
    assert "test" in result.metrics
    reloaded = load(project.store.candidate(result.candidate)["model_ref"])
    peft_config = reloaded.model.active_peft_config
    assert peft_config.num_virtual_tokens == 6
    # 6 virtual token embeddings (one set per encoder/decoder for seq2seq), nothing else
    assert result.trainable_params == 6 * peft_config.num_transformer_submodules * peft_config.token_dim


def test_lora_on_seq2seq(tmp_path):
    project = _project(tmp_path / "p", "tiny:t5", extra="adapt:\n  method: lora\n  learning_rate: 0.01\n")
    result = project_finetune(project, max_steps=3, evaluate=False)  # seq2seq generation: the prompt-tuning test
    assert result.candidate == "tiny-t5:lora"
    assert result.val_loss["after"] < result.val_loss["before"]
    assert 0 < result.trainable_pct < 100


def test_resume_continues_the_interrupted_finetune(tmp_path):
    """A run that lost its last checkpoint (as after a crash) resumes and ends where an unbroken run ends."""
    import shutil

    project = _project(tmp_path / "p", extra="adapt:\n  method: lora\n  save_every: 1\n  keep_best: false\n")
    whole = project_finetune(project, max_steps=4, evaluate=False)
    assert whole.resumed_from is None
    checkpoints = tmp_path / "p" / ".odyssey" / "adapt" / "tiny-llama-lora" / "train" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-3", "step-4"]
    shutil.rmtree(checkpoints / "step-4")
    resumed = project_finetune(project, max_steps=4, evaluate=False, resume=True)
    assert resumed.resumed_from == 3 and resumed.steps == 4
    assert resumed.train_loss == pytest.approx(whole.train_loss, abs=1e-5)
    assert resumed.val_loss["after"] == pytest.approx(whole.val_loss["after"], abs=1e-5)


def test_mixing_and_the_forgetting_check(tmp_path):
    root = tmp_path / "p"
    general = [{"input": f"What is {i} plus {i}?", "target": f"{2 * i}"} for i in range(6)]
    extra = (
        "adapt:\n  method: full\n  learning_rate: 0.003\n"
        "  mix: [{source: general.jsonl, weight: 0.5, instruction: Answer the sum.}]\n  general_set: general.jsonl\n"
    )
    project = _project(root, extra=extra)
    (root / "general.jsonl").write_text("\n".join(json.dumps(r) for r in general))
    result = project_finetune(project, max_steps=2, evaluate=False)
    n_train = len(project.dataset().split("train"))
    cand = project.store.candidate(result.candidate)
    assert cand["config"]["train"]["max_steps"] == 2
    f = result.forgetting
    assert set(f) == {"general_loss_before", "general_loss_after", "increase"}
    assert f["increase"] == pytest.approx(f["general_loss_after"] - f["general_loss_before"])
    runs = project.store.runs("adapt")
    assert runs[0]["config"]["n_examples"] == n_train + round(0.5 * n_train)
    # the mixed examples are trained with their own instruction
    from odyssey.data import Example
    from odyssey.prompts import PromptConfig
    from odyssey.training.sft import encode_example

    tok = load("tiny:llama").tokenizer
    task_cfg = PromptConfig.from_dict(cand["config"]["prompt"])
    mix_cfg = PromptConfig.from_dict({**task_cfg.as_dict(), "instruction": "Answer the sum."})
    ex = Example("0", general[0]["input"], (general[0]["target"],))
    assert "Answer the sum." in tok.decode(encode_example(tok, mix_cfg, ex, max_len=96).input_ids)


def test_cli_user_errors(tmp_path):
    root = tmp_path / "p"
    _project(root, extra="adapt:\n  method: lora\n")
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "odyssey.cli", *a],
        env=env,
        capture_output=True,  # noqa
        text=True,
        timeout=600,
    )
    bad = run("finetune", "--method", "qlora", "-p", str(root))
    assert bad.returncode == 2 and "full, lora, prompt_tuning" in bad.stderr and "Traceback" not in bad.stderr
    no_lora = run("finetune", "merge", "-p", str(root))
    assert no_lora.returncode == 2 and "odyssey finetune --method lora" in no_lora.stderr


@pytest.mark.slow
def test_cli_finetune_json(tmp_path):
    root = tmp_path / "p"
    _project(root, extra="adapt:\n  method: lora\n")
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "odyssey.cli",
            "finetune",
            "-p",
            str(root),
            "--max-steps",
            "2",
            "--no-evaluate",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout)
    assert payload["candidate"] == "tiny-llama:lora" and payload["steps"] == 2 and payload["trainable_pct"] > 0


def test_bad_adapt_settings_name_the_field(tmp_path):
    root = tmp_path / "p"
    tiny_project(root)
    (root / "odyssey.yaml").write_text(
        (root / "odyssey.yaml").read_text() + "adapt:\n  method: lora\n  lora: {rank: 8}\n"
    )
    from odyssey.errors import SpecError

    with pytest.raises(SpecError, match="rank"):
        Project.load(root)


@pytest.mark.slow
def test_lora_on_the_packaged_smollm2(tmp_path):
    """The real model: LoRA r16 on the 7 projections of 30 blocks, the fast completion-only loss, a few steps."""
    project = _project(
        tmp_path / "p", "packaged:smollm2-135m-instruct", extra="adapt:\n  method: lora\n  save_every: 2\n"
    )
    result = project_finetune(project, max_steps=2, evaluate=False)
    # r x (in + out) per projection: q, o 576->576; k, v 576->192; gate, up 576->1536; down 1536->576
    per_block = 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert result.trainable_params == 30 * per_block == 4_884_480
    assert 3.0 < result.trainable_pct < 4.0
    assert result.val_loss["after"] < result.val_loss["before"]
    assert result.memory_estimate_gb > 0 and result.peak_memory_gb > 0
