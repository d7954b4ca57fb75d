"""``odyssey optimize prune``: unstructured magnitude pruning, or structured pruning that
removes whole MLP neurons, attention heads or layers (a genuinely smaller dense model), then an
optional LoRA recovery fine-tune through the shared training loop.

Importance scores (computed on ``calibration_examples`` training examples, prompt + reference,
rendered as evaluation renders them):

- **MLP neurons** (per layer): ``I_j = mean_tokens |a_j| * ||W_down[:, j]||_2`` where
  ``a = act(gate(x)) * up(x)`` is the input of ``down_proj``: how much neuron j moves the layer's
  output (the activation-times-weight criterion of Wanda, summed per neuron as in LLM-Pruner's
  channel groups). The lowest ``sparsity`` share is removed in every layer (config holds one width).
- **attention heads** (per layer): ``I_h = mean_tokens ||z_h||_2 * ||W_o[:, h]||_F`` with ``z_h`` head
  h's slice of the ``o_proj`` input. The same number of query heads is removed from every
  key/value group, so grouped-query attention keeps its shape.
- **layers**: Block Influence (ShortGPT, Men et al. 2024): ``BI_i = 1 - mean_tokens cos(h_i, h_{i+1})``;
  the layers that change the hidden state least are removed.
- **unstructured** (``--unstructured``): ``torch.nn.utils.prune.l1_unstructured`` zeroes the
  smallest-magnitude weights of every linear layer in the decoder blocks. The tensors stay dense,
  so dense CPU kernels run exactly as fast and the safetensors file is as large; what it saves is
  storage once stored sparse (``sparse_size_mb``: CSR values + column indices) or compressed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.optimize.calibration import block_influence, calibration_batches
from odyssey.optimize.methods import check_sparsity


@dataclass
class PruneResult:
    candidate: str
    parent: str
    method: str
    model_ref: str
    run_id: int
    sparsity: float
    n_params: int
    parent_n_params: int
    details: dict = field(default_factory=dict)
    recovery: dict | None = None
    measurement: dict | None = None
    comparison: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# ---- importance on calibration batches -----------------------------------------------------------


def _mean_input_stat(model, batches, modules, per_token) -> list:
    """For each module, the mean over real (unpadded) tokens of ``per_token(input)`` ([batch, seq, ...] ->
    [batch, seq, k]), collected by forward pre-hooks during one pass over the calibration batches."""
    import torch

    sums: list = [None] * len(modules)
    counts = [0] * len(modules)
    masks: list = []

    def hook(i):
        def fn(module, args):
            values = per_token(args[0].detach().float())
            mask = masks[0].to(values.dtype).unsqueeze(-1)
            total = (values * mask).sum(dim=(0, 1))
            sums[i] = total if sums[i] is None else sums[i] + total
            counts[i] += int(masks[0].sum())

        return fn

    handles = [module.register_forward_pre_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        with torch.inference_mode():
            for batch in batches:
                masks[:] = [batch["attention_mask"]]
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    return [total / max(count, 1) for total, count in zip(sums, counts)]


def mlp_importance(model, batches) -> list:
    """Per layer, a tensor of neuron scores (see the module docstring)."""
    layers = model.model.layers
    means = _mean_input_stat(model, batches, [layer.mlp.down_proj for layer in layers], lambda x: x.abs())
    return [mean * layer.mlp.down_proj.weight.detach().float().norm(dim=0) for mean, layer in zip(means, layers)]


def head_importance(model, batches) -> list:
    from odyssey.optimize.surgery import head_dim

    cfg = model.config
    hd, n_heads = head_dim(cfg), cfg.num_attention_heads
    layers = model.model.layers

    def head_norms(x):
        b, t, _ = x.shape
        return x.view(b, t, n_heads, hd).norm(dim=-1)

    means = _mean_input_stat(model, batches, [layer.self_attn.o_proj for layer in layers], head_norms)
    scores = []
    for mean, layer in zip(means, layers):
        w = layer.self_attn.o_proj.weight.detach().float()
        w_norm = w.view(w.shape[0], n_heads, hd).pow(2).sum(dim=(0, 2)).sqrt()
        scores.append(mean * w_norm)
    return scores


# ---- the methods ---------------------------------------------------------------------------------


def structured_prune(model, target: str, sparsity: float, batches) -> tuple[object, dict]:
    from odyssey.optimize import surgery

    surgery.check_llama_like(model)
    cfg = model.config
    if target == "mlp":
        scores = mlp_importance(model, batches)
        width = cfg.intermediate_size
        keep_n = max(8, int(round(width * (1 - sparsity) / 8)) * 8)
        keep = [s.argsort(descending=True)[:keep_n].tolist() for s in scores]
        pruned = surgery.slice_mlp(model, keep)
        return pruned, {"importance": "mean |a_j| * ||W_down[:, j]||", "intermediate_size": [width, keep_n]}
    if target == "heads":
        n_heads = cfg.num_attention_heads
        n_kv = getattr(cfg, "num_key_value_heads", n_heads)
        group = n_heads // n_kv
        drop = int(round(sparsity * group))
        if drop < 1 or drop >= group:
            raise OdysseyError(
                f"sparsity {sparsity:g} removes {drop} of the {group} query heads in each key/value group",
                hint=f"heads are removed per group to keep grouped-query attention: choose a sparsity between "
                f"{0.5 / group:.2f} and {(group - 0.5) / group:.2f}",
            )
        scores = head_importance(model, batches)
        keep = []
        for s in scores:
            kept = []
            for g in range(n_kv):
                heads = list(range(g * group, (g + 1) * group))
                ranked = sorted(heads, key=lambda h: float(s[h]), reverse=True)
                kept += ranked[: group - drop]
            keep.append(sorted(kept))
        pruned = surgery.slice_heads(model, keep)
        return pruned, {"importance": "mean ||z_h|| * ||W_o[:, h]||", "heads": [n_heads, n_kv * (group - drop)]}
    if target == "layers":
        total = cfg.num_hidden_layers
        drop = int(round(sparsity * total))
        if drop < 1 or drop >= total:
            raise OdysseyError(
                f"sparsity {sparsity:g} of {total} layers removes {drop}",
                hint=f"choose a sparsity between {0.5 / total:.2f} and {(total - 0.5) / total:.2f}",
            )
        bi = block_influence(model, batches)
        removed = sorted(sorted(range(total), key=lambda i: bi[i])[:drop])
        keep = [i for i in range(total) if i not in removed]
        pruned = surgery.keep_layers(model, keep)
        return pruned, {
            "importance": "block influence 1 - cos(h_in, h_out)",
            "removed_layers": removed,
            "block_influence": [round(b, 5) for b in bi],
        }
    raise OdysseyError(f"unknown structured pruning target {target!r}", hint="use mlp, heads or layers")


def magnitude_prune(model, sparsity: float) -> dict:
    """Zero the smallest |w| in every linear layer of the decoder blocks (kept dense)."""
    import torch
    from torch.nn.utils import prune as torch_prune

    total = zeros = 0
    sparse_bytes = dense_bytes = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
            torch_prune.l1_unstructured(module, "weight", amount=sparsity)
            torch_prune.remove(module, "weight")  # make it permanent: a plain tensor with zeros
            w = module.weight.detach()
            nnz = int(w.count_nonzero())
            total += w.numel()
            zeros += w.numel() - nnz
            dense_bytes += w.numel() * w.element_size()
            sparse_bytes += nnz * (w.element_size() + 4) + (w.shape[0] + 1) * 4  # CSR: values, col idx, row ptr
    if total == 0:
        raise OdysseyError("found no linear layers inside decoder blocks to prune")
    return {
        "achieved_sparsity": zeros / total,
        "pruned_weights": total,
        "dense_linear_mb": dense_bytes / 1e6,
        "sparse_csr_linear_mb": sparse_bytes / 1e6,
        "note": "dense tensors with zeros: no speed-up on dense kernels; CSR storage saves "
        f"{(1 - sparse_bytes / dense_bytes) * 100:.0f}% of the linear weights' bytes",
    }


def recover(model, tokenizer, project, cfg, steps: int, spec, out_dir: Path, resume: bool) -> dict:
    """A short LoRA fine-tune of the pruned model on the train split, merged back into it."""
    from peft import LoraConfig, get_peft_model

    from odyssey.optimize.common import collate, sft_items
    from odyssey.training import TrainConfig, train

    items = sft_items(tokenizer, cfg, project.examples("train"), spec.max_length)
    lora = LoraConfig(
        r=spec.recover_lora_r,
        lora_alpha=2 * spec.recover_lora_r,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)

    def loss_fn(m, batch):
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, {"tokens": int(batch["labels"].ne(-100).sum())}

    config = TrainConfig(
        output_dir=out_dir,
        max_steps=steps,
        learning_rate=spec.recover_learning_rate,
        batch_size=spec.recover_batch_size,
        seed=spec.seed,
        save_every=max(10, steps // 4),
        log_every=max(1, steps // 10),
        warmup_steps=min(10, steps // 10),
    )
    result = train(
        peft_model,
        items,
        loss_fn,
        config,
        collate_fn=collate(tokenizer.pad_token_id or 0),
        resume=resume,
        description="pruning recovery (LoRA)",
    )
    merged = peft_model.merge_and_unload()
    return {
        "model": merged,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "wall_s": result.wall_s,
        "tokens_per_s": result.tokens_per_s,
        "resumed_from": result.resumed_from,
        "trainable_params": result.trainable_params,
    }


@dataclass
class _PrunePlan:
    """What a pruning run will do, settled (and every refusal raised) before the run starts."""

    spec: object  # project.spec.optimize.prune
    parent: object
    src: Path  # the parent as a plain HF checkpoint (LoRA merged)
    structured: bool
    sparsity: float
    target: str
    steps: int  # recovery steps, 0 for none
    method: str
    cand: str
    work: Path

    def run_settings(self) -> dict:
        return {
            "action": "prune",
            "method": self.method,
            "sparsity": self.sparsity,
            "recover_steps": self.steps,
            "parent": self.parent.name,
        }


def _plan_prune(
    project,
    structured: bool | None,
    sparsity: float | None,
    target: str | None,
    recover_steps: int | None,
    start_from: str | None,
    name: str | None,
) -> _PrunePlan:
    from odyssey.optimize.common import candidate_name, hf_checkpoint, resolve_parent

    spec = project.spec.optimize.prune
    structured = spec.structured if structured is None else structured
    sparsity = check_sparsity(spec.sparsity if sparsity is None else sparsity)  # before any work
    target = target or spec.target
    if target not in {"mlp", "heads", "layers"}:
        raise OdysseyError(f"unknown pruning target {target!r}", hint="use --target mlp, heads or layers")
    steps = spec.recover_steps if recover_steps is None else recover_steps
    if steps < 0:
        raise OdysseyError(f"--recover {steps} is negative", hint="give a number of steps, or 0 for no recovery")
    parent = resolve_parent(project, start_from)
    work_base = project.state_dir / "optimize"
    src = hf_checkpoint(project, parent.model_ref, work_base / ("merged-" + parent.name.replace(":", "-")))
    method = f"structured-{target}" if structured else "magnitude"
    suffix = f"pruned-{target if structured else 'magnitude'}-{int(round(sparsity * 100))}" + (
        f"-r{steps}" if steps else ""
    )
    cand = name or candidate_name(parent, suffix)
    work = project.state_dir / "optimize" / cand.replace(":", "-").replace("/", "-")
    return _PrunePlan(spec, parent, src, structured, sparsity, target, steps, method, cand, work)


def _prune_and_recover(project, plan: _PrunePlan, model, tokenizer, resume: bool) -> tuple[object, dict, dict | None]:
    """Prune the model, then fine-tune it back if recovery steps are asked; returns (model, details, recovery)."""
    spec = plan.spec
    if plan.structured:
        batches = calibration_batches(
            project, tokenizer, plan.parent.prompt, spec.calibration_examples, spec.max_length
        )
        model, details = structured_prune(model, plan.target, plan.sparsity, batches)
    else:
        details = magnitude_prune(model, plan.sparsity)
    recovery = None
    if plan.steps:
        rec = recover(model, tokenizer, project, plan.parent.prompt, plan.steps, spec, plan.work / "recovery", resume)
        model = rec.pop("model")
        recovery = rec
        if not plan.structured:  # LoRA merged dense deltas into the zeros: re-apply the mask
            details["after_recovery"] = magnitude_prune(model, plan.sparsity)
    return model, details, recovery


def _prune_in_run(project, run, plan: _PrunePlan, resume: bool) -> tuple[PruneResult, int, dict]:
    """Load, prune and save the candidate; the models are freed when this returns, before measuring.
    Returns (result, candidate id, info)."""
    from odyssey.models import load
    from odyssey.optimize.common import record_candidate, save_model

    loaded = load(str(plan.src), root=project.root, dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    parent_n = loaded.n_params
    model, details, recovery = _prune_and_recover(project, plan, model, tok, resume)
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "method": plan.method,
        "sparsity": plan.sparsity,
        "target": plan.target if plan.structured else None,
        "parent": plan.parent.name,
        "recover_steps": plan.steps,
        **details,
    }
    out = save_model(model, tok, run.artifacts_dir / "model", info)
    (run.artifacts_dir / "prune.json").write_text(json.dumps({**info, "recovery": recovery}, indent=2, default=str))
    cand_id = record_candidate(project, run, plan.cand, str(out), plan.parent, info)
    result = PruneResult(
        plan.cand,
        plan.parent.name,
        plan.method,
        str(out),
        run.id,
        plan.sparsity,
        n_params,
        parent_n,
        details,
        recovery,
    )
    return result, cand_id, info


def prune(
    project,
    *,
    structured: bool | None = None,
    sparsity: float | None = None,
    target: str | None = None,
    recover_steps: int | None = None,
    start_from: str | None = None,
    resume: bool = False,
    measure: bool = True,
    name: str | None = None,
    measure_settings: dict | None = None,
) -> PruneResult:
    """Prune a candidate (see the module docstring); the result is a candidate linked to its parent."""
    import torch

    from odyssey.optimize.common import STAGE
    from odyssey.optimize.record import measure_and_record
    from odyssey.paths import check_name

    if name is not None:
        check_name(name, "candidate name")  # before any work: it names the working folder
    plan = _plan_prune(project, structured, sparsity, target, recover_steps, start_from, name)
    torch.manual_seed(plan.spec.seed)
    with project.store.run(STAGE, project.spec.as_dict(), plan.run_settings()) as run:
        result, cand_id, info = _prune_in_run(project, run, plan, resume)
        if measure:
            result.measurement, result.comparison = measure_and_record(
                project, run, cand_id, plan.cand, result.model_ref, plan.parent, info, settings=measure_settings
            )
        run.set_summary(result.as_dict())
    return result
