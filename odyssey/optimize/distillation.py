"""``odyssey optimize distill``: a smaller student learns the teacher's token distributions.

Student: by default the teacher itself with every other decoder layer kept (``student_layers``,
evenly spaced, first and last always kept), initialised from the teacher's weights; or any model
that shares the teacher's tokenizer (``--student``), which must be smaller.

Loss, on the train split's items, prompts rendered as evaluation renders them::

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, reference)

(Hinton et al. 2015; T^2 keeps the soft-target gradients on the scale of the hard ones.) The CE is
taken on the reference tokens; the KL on every token by default (``positions: all``: a layer-dropped
student must relearn the language, not only the summary style) or on the reference tokens only
(``positions: completion``).

Teacher logits are cached to disk (``cache_teacher``): one teacher pass over the training items
writes the top-``cache_top_k`` logits of every KL position (tens of MB instead of
``vocab`` floats per token), the teacher is then freed, and every epoch, restart or resume reads
the cache. The KL is then taken over the teacher's top-k tokens (the teacher distribution
renormalised over them, the student's full-vocabulary log-probabilities at those ids): with
k = 64 this keeps > 99 % of a peaked teacher's probability mass. Without the cache the teacher
runs beside the student and the KL covers the whole vocabulary.

Training goes through the shared loop (:func:`odyssey.training.train`): checkpoints, exact
resume, progress bar. TRL 1.16's ``DistillationTrainer`` / ``GKDTrainer`` are not used: they
keep the teacher in memory for every step (twice the memory of this cached path on a CPU), GKD
adds on-policy student generation (minutes per step on a CPU), and they would bypass the shared
loop's resume and checkpoint format that every other Odyssey stage uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError


@dataclass
class DistillResult:
    candidate: str
    parent: str  # the teacher
    model_ref: str
    run_id: int
    student_layers: int
    teacher_layers: int
    n_params: int
    teacher_n_params: int
    training: dict = field(default_factory=dict)
    measurement: dict | None = None
    comparison: dict | None = None

    @property
    def method(self) -> str:
        return "distill"

    def as_dict(self) -> dict:
        return {**asdict(self), "method": self.method}


def _config_of(path: Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())


def _count_params(path: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())


def check_student(teacher_dir: Path, student_layers: int | None, student_dir: Path | None) -> None:
    """A student that is not smaller than its teacher is refused before anything is loaded."""
    from transformers import AutoTokenizer

    cfg = _config_of(teacher_dir)
    total = cfg.get("num_hidden_layers")
    if student_dir is None:
        if total is None:
            raise OdysseyError(
                f"the teacher ({cfg.get('model_type')}) has no num_hidden_layers to halve",
                hint="pass --student with a smaller model that shares the tokenizer",
            )
        if student_layers is not None and not 1 <= student_layers < total:
            raise OdysseyError(
                f"a student with {student_layers} layers is not smaller than its {total}-layer teacher",
                hint=f"choose --student-layers between 1 and {total - 1} (half: {max(1, total // 2)})",
            )
        return
    t_params, s_params = _count_params(teacher_dir), _count_params(student_dir)
    if s_params >= t_params:
        raise OdysseyError(
            f"the student has {s_params:,} parameters, the teacher {t_params:,}: a student must be "
            "smaller than its teacher",
            hint="pick a smaller --student, or drop it to halve the teacher",
        )
    tv = AutoTokenizer.from_pretrained(teacher_dir).get_vocab()
    sv = AutoTokenizer.from_pretrained(student_dir).get_vocab()
    if tv != sv:
        raise OdysseyError(
            "the student does not share the teacher's tokenizer, so their token distributions cannot be "
            "compared position by position",
            hint="use a student of the same model family",
        )


# ---- teacher cache -------------------------------------------------------------------------------


def _completion_positions(labels):
    """Positions whose logits predict a reference token (the logit at t predicts token t+1)."""
    return labels[:, 1:].ne(-100)


def kd_positions(batch: dict, positions: str):
    """Where the KL term is taken: ``completion`` (the reference tokens, like the CE) or ``all`` (every
    position that predicts a real next token, prompt included). A student made by dropping half the
    teacher's layers has lost general language ability, not only the task: the teacher's distribution
    over the dialogue tokens is ~10x more signal per item than over the summary alone."""
    if positions == "all":
        return batch["attention_mask"][:, 1:].bool()
    return _completion_positions(batch["labels"])


def cache_teacher(
    teacher, items: list[dict], collate_fn, k: int, path: Path, batch_size: int = 4, positions: str = "completion"
) -> dict:
    """Top-k teacher logits at every KL position (``kd_positions``) of every item, written as safetensors."""
    import torch
    from safetensors.torch import load_file, save_file

    from odyssey import ui

    if path.exists():
        data = load_file(str(path))
        return {"values": data["values"], "indices": data["indices"], "offsets": data["offsets"]}
    values, indices, offsets = [], [], [0]
    with torch.inference_mode(), ui.progress("caching teacher logits", total=len(items)) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = collate_fn(chunk)
            logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            mask = kd_positions(batch, positions)
            for row in range(len(chunk)):
                sel = logits[row][mask[row]].float()
                top = sel.topk(min(k, sel.shape[-1]), dim=-1)
                values.append(top.values)
                indices.append(top.indices.to(torch.int32))
                offsets.append(offsets[-1] + sel.shape[0])
            bar.advance(len(chunk))
    data = {
        "values": torch.cat(values).contiguous(),
        "indices": torch.cat(indices).contiguous(),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
    }
    tmp = path.with_name(path.name + ".partial")
    save_file(data, str(tmp))
    tmp.rename(path)
    return data


def kd_loss(
    student_logits,
    labels,
    temperature: float,
    alpha: float,
    *,
    teacher_logits=None,
    cache=None,
    index=None,
    kd_mask=None,
):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE. The CE is taken on completion
    positions; the KL there too unless ``kd_mask`` (from ``kd_positions``) names other positions."""
    import torch
    import torch.nn.functional as F

    logits = student_logits[:, :-1]
    mask = _completion_positions(labels)
    targets = labels[:, 1:][mask]
    ce = F.cross_entropy(logits[mask].float(), targets)
    if kd_mask is None:
        kd_mask = mask
    s = logits[kd_mask].float()
    log_s = F.log_softmax(s / temperature, dim=-1)
    if cache is not None:
        rows_v, rows_i = [], []
        for item in index.tolist():
            a, b = int(cache["offsets"][item]), int(cache["offsets"][item + 1])
            rows_v.append(cache["values"][a:b])
            rows_i.append(cache["indices"][a:b])
        t_vals = torch.cat(rows_v).to(s.device)
        t_idx = torch.cat(rows_i).to(s.device).long()
        if t_vals.shape[0] != s.shape[0]:
            raise OdysseyError(
                "the teacher cache does not match the training items (a changed prompt or data?)",
                hint="delete the distillation work folder (teacher-topk.safetensors) and run again",
            )
        log_t = F.log_softmax(t_vals / temperature, dim=-1)
        kl = (log_t.exp() * (log_t - log_s.gather(-1, t_idx))).sum(-1).mean()
    else:
        log_t = F.log_softmax(teacher_logits[:, :-1][kd_mask].float() / temperature, dim=-1)
        kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss, {
        "kl": float(kl.detach()),
        "ce": float(ce.detach()),
        "tokens": int(mask.sum()),
        "kd_tokens": int(kd_mask.sum()),
    }


def student_layers_to_keep(
    project, model, tokenizer, prompt_cfg, total: int, k: int, how: str, max_length: int
) -> tuple[list[int], dict]:
    """The teacher layers a derived student keeps: ``every-other`` (spread evenly) or ``block-influence``
    (the ``k`` layers with the highest 1 - cos(h_in, h_out) on 32 train examples: those that change
    the hidden state most, as in ShortGPT's layer pruning)."""
    from odyssey.optimize import surgery
    from odyssey.optimize.calibration import block_influence, calibration_batches

    if how == "every-other":
        return surgery.every_other_layer(total, k), {}
    surgery.every_other_layer(total, k)  # the same "not smaller than its teacher" check
    bi = block_influence(model, calibration_batches(project, tokenizer, prompt_cfg, 32, max_length))
    keep = sorted(sorted(range(total), key=lambda i: bi[i], reverse=True)[:k])
    return keep, {"block_influence": [round(b, 5) for b in bi]}


@dataclass
class _DistillPlan:
    """What a distillation run will do, settled (and every refusal raised) before the run starts."""

    spec: object  # project.spec.optimize.distill
    parent: object  # the teacher candidate
    teacher_dir: Path
    student: str | None  # --student, or None for a student derived from the teacher's layers
    student_dir: Path | None
    total: int | None  # the teacher's decoder layers
    k: int | None  # the layers a derived student keeps
    student_init: str
    steps: int
    cand: str
    work: Path

    def run_settings(self) -> dict:
        return {
            "action": "distill",
            "teacher": self.parent.name,
            "student_layers": self.k,
            "student": self.student,
            "student_init": self.student_init if self.k else None,
            "steps": self.steps,
        }


@dataclass
class _StudentSetup:
    """Everything the training loop needs: the student, its items and the teacher's signal."""

    tokenizer: object
    teacher_n_params: int
    student: object
    kept_layers: list[int] | None
    init_info: dict
    items: list[dict]
    collate_fn: object
    cache: dict | None  # the teacher's cached top-k logits, or None ...
    teacher: object | None  # ... and then the teacher itself runs beside the student


def _candidate_suffix(k: int | None, student: str | None, student_init: str, root) -> str:
    from odyssey.models import parse_ref

    if not k:
        return "distilled-" + parse_ref(student, root).slug
    suffix = f"distilled-{k}l"
    if student_init != "every-other":  # its own name, so a resumed run never mixes two layer choices
        suffix += "-bi"
    return suffix


def _plan_distill(
    project,
    teacher: str | None,
    student_layers: int | None,
    student: str | None,
    steps: int | None,
    name: str | None,
    student_init: str | None,
) -> _DistillPlan:
    from odyssey.models import parse_ref, resolve
    from odyssey.optimize.common import candidate_name, hf_checkpoint, resolve_parent

    spec = project.spec.optimize.distill
    student_layers = student_layers if student_layers is not None else spec.student_layers
    student = student or spec.student
    steps = steps or spec.steps
    student_init = student_init or spec.student_init
    if student_init not in {"every-other", "block-influence"}:
        raise OdysseyError(f"unknown student init {student_init!r}", hint="use every-other or block-influence")
    parent = resolve_parent(project, teacher or spec.teacher)
    # Everything that can be refused is checked before the run starts and before any model loads.
    teacher_dir = hf_checkpoint(
        project, parent.model_ref, project.state_dir / "optimize" / ("merged-" + parent.name.replace(":", "-"))
    )
    student_dir = None
    if student:
        parse_ref(student, project.root)
        student_dir = Path(resolve(student, project.root))
    check_student(teacher_dir, student_layers, student_dir)
    total = _config_of(teacher_dir).get("num_hidden_layers")
    k = None if student_dir else (student_layers or max(1, total // 2))
    suffix = _candidate_suffix(k, student, student_init, project.root)
    cand = name or candidate_name(parent, suffix)
    work = project.state_dir / "optimize" / cand.replace(":", "-").replace("/", "-")
    work.mkdir(parents=True, exist_ok=True)
    return _DistillPlan(spec, parent, teacher_dir, student, student_dir, total, k, student_init, steps, cand, work)


def _make_student(project, plan: _DistillPlan, teacher_model, tokenizer) -> tuple[object, list[int] | None, dict]:
    """The student model, the teacher layers it keeps (None for a --student) and how they were chosen."""
    from odyssey.models import load
    from odyssey.optimize import surgery

    if plan.student_dir is not None:
        return load(str(plan.student_dir), root=project.root, dtype="float32").model, None, {}
    keep, init_info = student_layers_to_keep(
        project,
        teacher_model,
        tokenizer,
        plan.parent.prompt,
        plan.total,
        plan.k,
        plan.student_init,
        plan.spec.max_length,
    )
    return surgery.keep_layers(teacher_model, keep), keep, init_info


def _training_items(project, plan: _DistillPlan, tokenizer) -> list[dict]:
    """The train split's items, each with its ``index`` (its row in the teacher cache)."""
    import random

    from odyssey.optimize.common import sft_items

    spec = plan.spec
    items = sft_items(tokenizer, plan.parent.prompt, project.examples("train"), spec.max_length)
    needed = plan.steps * spec.batch_size
    if needed < len(items):
        # A run shorter than one epoch sees only this many items: cache (and train on) a seeded
        # sample of that size instead of paying teacher passes over items never visited.
        items = random.Random(spec.seed).sample(items, needed)
    for i, item in enumerate(items):
        item["index"] = i
    return items


def _teacher_signal(plan: _DistillPlan, teacher_model, items: list[dict], collate_fn) -> tuple[dict | None, object]:
    """``(cache, None)`` with the teacher's top-k logits cached to disk, else ``(None, frozen teacher)``."""
    spec = plan.spec
    if not spec.cache_teacher:
        teacher_model.requires_grad_(False)
        return None, teacher_model
    key = hashlib.sha256(
        json.dumps(
            [
                plan.parent.model_ref,
                spec.cache_top_k,
                spec.max_length,
                spec.positions,
                [it["input_ids"] for it in items],
            ]
        ).encode()
    ).hexdigest()[:12]
    cache = cache_teacher(
        teacher_model,
        items,
        collate_fn,
        spec.cache_top_k,
        plan.work / f"teacher-top{spec.cache_top_k}-{key}.safetensors",
        positions=spec.positions,
    )
    return cache, None


def _set_up_student(project, plan: _DistillPlan) -> _StudentSetup:
    """Load the teacher, build the student and its items, cache the teacher's logits if asked. With a
    cache, nothing returned refers to the teacher: the student trains alone, the teacher's memory is free."""
    import torch

    from odyssey.models import load
    from odyssey.optimize.common import collate

    torch.manual_seed(plan.spec.seed)
    t_loaded = load(str(plan.teacher_dir), root=project.root, dtype="float32")
    tok = t_loaded.tokenizer
    teacher_n = t_loaded.n_params
    s_model, keep, init_info = _make_student(project, plan, t_loaded.model, tok)
    items = _training_items(project, plan, tok)
    collate_fn = collate(tok.pad_token_id if tok.pad_token_id is not None else 0)
    cache, t_model = _teacher_signal(plan, t_loaded.model, items, collate_fn)
    return _StudentSetup(tok, teacher_n, s_model, keep, init_info, items, collate_fn, cache, t_model)


def _distill_loss_fn(spec, cache: dict | None, teacher_model):
    """The training loop's loss: ``kd_loss`` against the cached top-k logits or the live teacher's."""
    import torch

    def loss_fn(model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        teacher_logits = None
        if cache is None:
            with torch.no_grad():
                teacher_logits = teacher_model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
        return kd_loss(
            out.logits,
            batch["labels"],
            spec.temperature,
            spec.alpha,
            teacher_logits=teacher_logits,
            cache=cache,
            index=batch.get("index"),
            kd_mask=kd_positions(batch, spec.positions),
        )

    return loss_fn


def _train_student(plan: _DistillPlan, setup: _StudentSetup, resume: bool):
    from odyssey.training import TrainConfig, train

    spec, steps = plan.spec, plan.steps
    config = TrainConfig(
        output_dir=plan.work / "train",
        max_steps=steps,
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
        seed=spec.seed,
        save_every=max(10, steps // 4),
        log_every=max(1, steps // 20),
        warmup_steps=min(20, steps // 10),
    )
    return train(
        setup.student,
        setup.items,
        _distill_loss_fn(spec, setup.cache, setup.teacher),
        config,
        collate_fn=setup.collate_fn,
        resume=resume,
        description=f"distilling into {plan.k or 'the student'} layers",
    )


def _save_student(project, run, plan: _DistillPlan, setup: _StudentSetup, trained) -> tuple[DistillResult, int, dict]:
    """Write the trained student and its record, register the candidate; returns (result, candidate id, info)."""
    from odyssey.optimize.common import record_candidate, save_model

    spec, s_model, keep = plan.spec, setup.student, setup.kept_layers
    s_model.eval()
    n_params = sum(p.numel() for p in s_model.parameters())
    info = {
        "method": "distill",
        "teacher": plan.parent.name,
        "student": plan.student or f"{plan.k} of {plan.total} teacher layers",
        "kept_layers": keep,
        "student_init": plan.student_init if keep else None,
        **setup.init_info,
        "temperature": spec.temperature,
        "alpha": spec.alpha,
        "steps": trained.steps,
        "kd_positions": spec.positions,
        "teacher_cache": bool(setup.cache is not None),
        "cache_top_k": spec.cache_top_k if setup.cache else None,
    }
    out = save_model(s_model, setup.tokenizer, run.artifacts_dir / "student", info)
    training = {
        "steps": trained.steps,
        "final_loss": trained.final_loss,
        "wall_s": trained.wall_s,
        "tokens_per_s": trained.tokens_per_s,
        "resumed_from": trained.resumed_from,
        "history": trained.history[-5:],
    }
    record = json.dumps({**info, "training": training}, indent=2, default=str)
    (run.artifacts_dir / "distill.json").write_text(record)
    cand_id = record_candidate(project, run, plan.cand, str(out), plan.parent, info)
    s_layers = int(s_model.config.num_hidden_layers) if hasattr(s_model.config, "num_hidden_layers") else 0
    result = DistillResult(
        plan.cand,
        plan.parent.name,
        str(out),
        run.id,
        s_layers,
        plan.total or 0,
        n_params,
        setup.teacher_n_params,
        training,
    )
    return result, cand_id, info


def _distill_in_run(project, run, plan: _DistillPlan, resume: bool) -> tuple[DistillResult, int, dict]:
    """Set up, train and save the student; the models are freed when this returns, before measuring."""
    run.artifacts_dir.mkdir(parents=True, exist_ok=True)
    setup = _set_up_student(project, plan)
    trained = _train_student(plan, setup, resume)
    return _save_student(project, run, plan, setup, trained)


def distill(
    project,
    *,
    teacher: str | None = None,
    student_layers: int | None = None,
    student: str | None = None,
    steps: int | None = None,
    resume: bool = False,
    measure: bool = True,
    name: str | None = None,
    measure_settings: dict | None = None,
    student_init: str | None = None,
) -> DistillResult:
    from odyssey.optimize.common import STAGE
    from odyssey.optimize.record import measure_and_record
    from odyssey.paths import check_name

    if name is not None:
        check_name(name, "candidate name")  # before any work: it names the working folder
    plan = _plan_distill(project, teacher, student_layers, student, steps, name, student_init)
    with project.store.run(STAGE, project.spec.as_dict(), plan.run_settings()) as run:
        result, cand_id, info = _distill_in_run(project, run, plan, resume)
        if measure:
            result.measurement, result.comparison = measure_and_record(
                project, run, cand_id, plan.cand, result.model_ref, plan.parent, info, settings=measure_settings
            )
        run.set_summary(result.as_dict())
    return result
