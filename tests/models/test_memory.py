"""trim_heap: freed C-heap pages go back to the OS, so a resident-memory baseline counts only live memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import FIXED_PROBE as PROBE

CHILD = """
from odyssey.models.memory import rss_gb, trim_heap
blocks = [bytes(64 * 1024) for _ in range(2000)]   # 125 MiB in 64 KiB malloc'd blocks (below the mmap threshold)
keep = blocks[1::2]                                # every other block stays alive: the heap cannot shrink from the top
del blocks
before = rss_gb()
trim_heap()
after = rss_gb()
print(before, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_trim_heap_returns_freed_pages():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    freed_mib = (before - after) * 1024
    assert 40 < freed_mib < 80, (before, after)  # about the 62.5 MiB of freed blocks, not the live half


def test_peak_rss_of_a_spawned_child_excludes_the_parents_peak():
    import subprocess
    import sys

    from odyssey.models.memory import peak_rss_gb

    ballast = bytearray(600 * 1024**2)  # pages touched: this process's peak grows by 0.6 GB
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    parent_peak = peak_rss_gb()
    code = "from odyssey.models.memory import peak_rss_gb; print(peak_rss_gb())"
    child_peak = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del ballast
    assert parent_peak >= 0.6
    # The child imports only the stdlib and this module: tens of MB, whatever the parent holds.
    assert 0 < child_peak < 0.3 < parent_peak


# ---- one estimate: `odyssey plan`, `odyssey models` and `odyssey finetune` agree on the same job ----------


def _peft_lora(dropout: float):
    from odyssey.adapt.finetune_methods import apply_method
    from odyssey.models import load
    from odyssey.spec import AdaptSpec

    aspec = AdaptSpec.model_validate({"method": "lora", "lora": {"r": 8, "dropout": dropout}})
    return apply_method(load("tiny:llama", dtype="float32").model, "lora", aspec, seq2seq=False)


@pytest.mark.parametrize(("method", "dropout"), [("lora", 0.0), ("lora", 0.05), ("full", 0.0)])
def test_plan_models_and_finetune_report_the_same_memory_for_the_same_job(method, dropout):
    from types import SimpleNamespace

    from odyssey.adapt.finetune_stage import memory_estimate_gb
    from odyssey.models import load
    from odyssey.models.memory import Shape, estimate
    from odyssey.select.planner import model_shape, plan
    from odyssey.training.lora import lora_input_features

    batch, seq = 4, 64
    shape = model_shape("tiny:llama", lora_r=8, lora_dropout=dropout)
    planned = plan("tiny:llama", method, "cpu:2,ram:8gb", batch=batch, seq=seq, lora_dropout=dropout, measured=PROBE)
    job_gb = planned.total_gb - planned.memory_gb["runtime"]  # the plan adds what the process holds before the model
    # what finetune counts on the model PEFT adapted is what the planner counts on the meta-device model
    dropout_inputs = lora_input_features(_peft_lora(dropout)) if dropout else 0
    assert dropout_inputs == shape.lora_dropout_inputs
    assert ("lora_dropout" in planned.memory_gb) == bool(dropout)

    config = load("tiny:llama").model.config
    trainable = shape.n_params if method == "full" else shape.lora_params
    models = estimate(
        Shape.from_config(config, shape.n_params),
        batch=batch,
        seq=seq,
        trainable=trainable,
        cpu_heap=True,
        dropout_inputs=dropout_inputs,
    )
    models_gb = models.train_full_gb if method == "full" else models.train_lora_gb

    # finetune's largest batch: 4 examples of 64 tokens; a PEFT model's total counts its adapter
    groups = [[SimpleNamespace(input_ids=[0] * seq) for _ in range(batch)]]
    total = shape.n_params + (0 if method == "full" else trainable)
    finetune_gb = memory_estimate_gb(
        SimpleNamespace(config=config), method, trainable, total, groups, False, dropout_inputs
    )

    assert job_gb == pytest.approx(models_gb, abs=1e-3)  # the plan rounds to 4 decimals
    assert finetune_gb == pytest.approx(models_gb, rel=1e-9)


def _saved_activation_bytes(model, ids) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward, parameters left out."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(saved.values())


def test_lora_dropout_memory_term_matches_what_autograd_keeps():
    """The lora_dropout term is measured: what LoRA with dropout keeps beyond LoRA without it, as the
    training loop runs it (FastDropout), is close to the estimate's copies of the adapted inputs."""
    import torch

    from odyssey.models.memory import LORA_DROPOUT_COPIES
    from odyssey.training.lora import lora_input_features
    from odyssey.training.speed import swap_dropout

    ids = torch.randint(5, 200, (2, 64), generator=torch.Generator().manual_seed(0))
    kept = {}
    for dropout in (0.0, 0.1):
        model = _peft_lora(dropout).train()
        swap_dropout(model)
        kept[dropout] = _saved_activation_bytes(model, ids)
    copies = (kept[0.1] - kept[0.0]) / (ids.numel() * lora_input_features(model) * 4)
    assert copies == pytest.approx(LORA_DROPOUT_COPIES, rel=0.15)  # SmolLM2 1.46, the tiny Llama 1.31
