"""How the loop runs at the speed of the hardware it finds: the settings are chosen from the device
(like the precision) and stated in the run's log, so a slow run can be read off its first lines.

What was measured on a 2-core x86 CPU, SmolLM2-135M, LoRA r=16 on every projection, batches of
~2,000 tokens (``benchmarks/finetune_throughput.py --ablations``; figures in its JSON):

- matrix multiplies are ~58% of a LoRA step; they already run at ~80% of the machine's fp32 GEMM rate;
- LoRA's input dropout was ~16%: CPU ``bernoulli_`` draws one Mersenne-Twister number per element,
  ~60x the cost of a multiply. :class:`FastDropout` draws 64 random bits per four elements and
  compares 16-bit lanes with the threshold instead: the same Bernoulli mask (p rounded to 1/65,536),
  2.6x cheaper forward and backward, from the same seeded generator (so resume stays exact);
- SDPA's flash kernel beats eager attention (which materializes the scores) at these lengths;
- ``fused=True`` AdamW (one kernel over all parameters) is ~13% faster for full fine-tuning and the
  same for LoRA, whose parameters are few;
- ``torch.compile`` of each decoder layer cost ~30 s of compilation and gained nothing measurable in
  steady state (the step is GEMM-bound), so it is not used; nor is it on CUDA, where it is untested here;
- the thread count is torch's default (one per physical core): more threads than cores thrash.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("odyssey.training")


class FastDropout(torch.nn.Module):
    """``nn.Dropout`` with a cheaper mask on CPU (see the module docstring); identical on other devices."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        # keep where a uniform 16-bit lane >= threshold: P(drop) = round(p * 65536) / 65536
        self.threshold = -32768 + round(self.p * 65536)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, True)
        n = x.numel()
        # from=int64 min with to=None samples the full 64-bit range: four uniform int16 lanes per draw
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)[:n]
        keep = (bits.view(x.shape) >= self.threshold).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def swap_dropout(model) -> list[tuple]:
    """Replace every ``nn.Dropout`` with p > 0 by a :class:`FastDropout`; returns what :func:`restore` undoes."""
    swapped = []
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped.append((parent, name, child))
    return swapped


def restore(swapped: list[tuple]) -> None:
    for parent, name, original in swapped:
        original.train(getattr(parent, name).training)
        setattr(parent, name, original)


def optimizer_kwargs(params, requested: str) -> tuple[dict, str]:
    """torch.optim keyword arguments for ``requested`` (auto | fused | foreach | for-loop) and its name."""
    if requested == "auto":
        devices = {p.device.type for p in params}
        dtypes = {p.dtype for p in params}
        fusable = devices <= {"cpu", "cuda"} and dtypes <= {torch.float32, torch.bfloat16, torch.float16}
        requested = "fused" if fusable else "foreach"
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[
        requested
    ], requested


def attention_of(model) -> str:
    """The attention implementation transformers picked for ``model`` (sdpa, flash_attention_2, eager...)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        impl = getattr(config, "_attn_implementation", None)
        if impl:
            return impl
    return "n/a"


def describe(settings: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def state(settings: dict) -> None:
    """Say the settings in the run's log (and on the terminal unless quiet)."""
    from odyssey import ui

    line = "training settings: " + describe(settings)
    log.info(line)
    ui.say(f"[dim]{line}[/dim]")
