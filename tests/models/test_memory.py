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


@pytest.mark.parametrize("method", ["lora", "full"])
def test_plan_models_and_finetune_report_the_same_memory_for_the_same_job(method):
    from types import SimpleNamespace

    from odyssey.adapt.finetune_stage import memory_estimate_gb
    from odyssey.models import load
    from odyssey.models.memory import Shape, estimate
    from odyssey.select.planner import model_shape, plan

    batch, seq = 4, 64
    shape = model_shape("tiny:llama", lora_r=8)
    planned = plan("tiny:llama", method, "cpu:2,ram:8gb", batch=batch, seq=seq, measured=PROBE)
    job_gb = planned.total_gb - planned.memory_gb["runtime"]  # the plan adds what the process holds before the model

    config = load("tiny:llama").model.config
    trainable = shape.n_params if method == "full" else shape.lora_params
    models = estimate(
        Shape.from_config(config, shape.n_params), batch=batch, seq=seq, trainable=trainable, cpu_heap=True
    )
    models_gb = models.train_full_gb if method == "full" else models.train_lora_gb

    # finetune's largest batch: 4 examples of 64 tokens; a PEFT model's total counts its adapter
    groups = [[SimpleNamespace(input_ids=[0] * seq) for _ in range(batch)]]
    total = shape.n_params + (0 if method == "full" else trainable)
    finetune_gb = memory_estimate_gb(SimpleNamespace(config=config), method, trainable, total, groups, False)

    assert job_gb == pytest.approx(models_gb, abs=1e-3)  # the plan rounds to 4 decimals
    assert finetune_gb == pytest.approx(models_gb, rel=1e-9)
