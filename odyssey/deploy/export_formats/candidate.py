"""``odyssey export CANDIDATE --format hf|gguf|ollama --to DIR``: a candidate as files other tools load,
answering as it did in evaluation.

* ``hf``: a merged safetensors folder (a LoRA folded into its base with ``save_merged``) that plain
  ``AutoModelForCausalLM.from_pretrained`` loads, or with ``--adapter`` the PEFT adapter folder that
  ``PeftModel.from_pretrained`` loads on its base; with the tokenizer, the chat template and a
  ``generation_config.json`` holding the harness's generation settings (greedy, max_new_tokens, the
  stop tokens ``engines.transformers.generation_kwargs`` stops on).
* ``gguf``: that merged folder through llama.cpp's converter (f32 by default: the reference engine runs
  f32, so greedy answers match), optionally ``--quant``-ized; the chat template, EOS/EOT tokens and
  ``add_bos_token`` are checked and written into the file.
* ``ollama``: the GGUF file plus a ``Modelfile`` (TEMPLATE, SYSTEM, stop and sampling PARAMETERs).

In ``--prompt-mode task`` (the default, as ``odyssey serve``) the chat template is the candidate's
evaluated prompt (``prompt_template.py``): a user's raw input as the user message becomes exactly the
prompt the harness rendered. ``--prompt-mode chat`` keeps the model's own chat template.

Everything that can be refused is refused before any work: an unknown candidate or format, a non-empty
``--to`` without ``--force``, a soft prompt to GGUF, few-shot examples chosen per input. The folder is
written atomically (``atomic_dir``): a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError

FORMATS = ("hf", "gguf", "ollama")
PROMPT_MODES = ("task", "chat")
PRECISIONS = ("f32", "f16", "bf16")
EXPORT_RECORD = "odyssey-export.json"  # written last into every export: what --force may replace


@dataclass
class ExportPlan:
    """What will be exported, settled (and checked) before any weights are loaded."""

    project: object
    row: dict
    format: str
    to: Path
    folder: Path
    kind: str  # lora | prompt_tuning | full (any plain checkpoint)
    cfg: object  # odyssey.prompts.PromptConfig
    prompt_mode: str
    adapter: bool = False
    quant: str | None = None
    precision: str = "f32"

    @property
    def name(self) -> str:
        return self.row["name"]

    @property
    def settings(self) -> dict:
        """The generation settings the harness used for this candidate (run_harness's defaults)."""
        return {"max_new_tokens": 64, **self.cfg.generation}


@dataclass
class ExportResult:
    candidate: str
    format: str
    path: Path
    files: list[str]
    prompt_mode: str
    checked_examples: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def resolve_candidate(project, name: str) -> dict:
    """The stored candidate's row, by name or 'best' (the store's one rule)."""
    return project.store.candidate(project.store.resolve(name).name)


def plan_export(
    project,
    candidate: str,
    format: str,
    to: Path,
    *,
    adapter: bool = False,
    quant: str | None = None,
    precision: str = "f32",
    prompt_mode: str = "task",
    force: bool = False,
) -> ExportPlan:
    """Every check that needs no weights: a mistake is an error here, before anything is loaded."""
    from odyssey.models import llamacpp, parse_ref
    from odyssey.models.checkpoint import adapter_kind
    from odyssey.models.loading import resolve
    from odyssey.prompts import PromptConfig

    if format not in FORMATS:
        raise OdysseyError(f"unknown export format {format!r}", hint=f"--format {' | '.join(FORMATS)}")
    if prompt_mode not in PROMPT_MODES:
        raise OdysseyError(f"unknown prompt mode {prompt_mode!r}", hint="--prompt-mode task | chat")
    if precision not in PRECISIONS:
        raise OdysseyError(f"unknown GGUF precision {precision!r}", hint=f"--precision {' | '.join(PRECISIONS)}")
    if quant is not None and format == "hf":
        raise OdysseyError("--quant applies to GGUF files", hint="use --format gguf or ollama with --quant")
    if quant is not None and quant.lower() not in llamacpp.QUANT_TYPES:
        raise OdysseyError(f"unknown GGUF quantization {quant!r}", hint=f"--quant {' | '.join(llamacpp.QUANT_TYPES)}")
    if adapter and format != "hf":
        raise OdysseyError(
            "--adapter writes a PEFT adapter folder, which only the hf format holds",
            hint="use --format hf --adapter, or drop --adapter (GGUF gets the merged weights)",
        )
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        if not force:
            raise OdysseyError(
                f"--to {to} already exists and is not an empty folder",
                hint="choose a new folder, or add --force to replace an earlier export",
            )
        if not (to / EXPORT_RECORD).is_file():  # --to ~ --force must not delete a home folder
            raise OdysseyError(
                f"--to {to} is not an earlier export (it has no {EXPORT_RECORD}): --force replaces only exports",
                hint="choose a new or empty folder",
            )
    row = resolve_candidate(project, candidate)
    ref = row["model_ref"]
    if parse_ref(ref, project.root).kind == "gguf" or str(ref).endswith(".gguf"):
        raise OdysseyError(
            f"{row['name']} is already a GGUF file ({ref}): its weights have no safetensors form",
            hint="export its parent instead, with --format gguf --quant TYPE",
        )
    folder = resolve(ref, project.root)
    kind = (adapter_kind(folder) or "full").lower()
    _check_kind(row["name"], folder, kind, format, adapter)
    scope = project.spec.scope
    stored = row["config"].get("prompt")
    cfg = PromptConfig.from_dict(stored or PromptConfig.default(scope.task, scope.labels).as_dict())
    if prompt_mode == "task" and cfg.shots and cfg.selection != "fixed":
        raise OdysseyError(
            f"{row['name']} is a {cfg.name} candidate: its in-context examples are chosen per input, "
            "which a chat template's fixed text cannot do",
            hint="export with --prompt-mode chat and render prompts yourself, or export a "
            "fixed-selection or fine-tuned candidate",
        )
    return ExportPlan(
        project, row, format, to, folder, kind, cfg, prompt_mode, adapter, quant.lower() if quant else None, precision
    )


def _check_kind(name: str, folder: Path, kind: str, format: str, adapter: bool) -> None:
    from odyssey.engines.gguf import CannotRun, check_convertible

    if format in ("gguf", "ollama"):
        try:
            check_convertible(folder)
        except CannotRun as exc:
            reason = exc.message.split(", so ")[0].split(": it runs")[0]
            raise OdysseyError(
                f"cannot export {name} as {format}: {reason}",
                hint="use --format hf" + (" --adapter" if kind == "prompt_tuning" else ""),
            ) from None
    elif kind not in ("lora", "full") and not adapter:
        raise OdysseyError(
            f"{name} is a soft-prompt ({kind}) candidate: its prompt vectors cannot be merged into the weights",
            hint="use --format hf --adapter (PeftModel.from_pretrained loads it)",
        )
    elif adapter and kind == "full":
        raise OdysseyError(f"{name} is a full checkpoint, not an adapter", hint="drop --adapter")


def export_candidate(
    project,
    candidate: str,
    format: str,
    to: Path,
    *,
    adapter: bool = False,
    quant: str | None = None,
    precision: str = "f32",
    prompt_mode: str = "task",
    force: bool = False,
) -> ExportResult:
    """Export one candidate (see the module docstring); returns where and what was written."""
    from odyssey import ui
    from odyssey.deploy.export_formats import card, files
    from odyssey.models import load
    from odyssey.models.checkpoint import atomic_dir

    plan = plan_export(
        project,
        candidate,
        format,
        to,
        adapter=adapter,
        quant=quant,
        precision=precision,
        prompt_mode=prompt_mode,
        force=force,
    )
    with ui.status(f"loading {plan.name}"):
        loaded = load(plan.row["model_ref"], root=project.root, dtype="float32")
    template, checked = files.chat_template(plan, loaded.tokenizer)
    notes = []
    with atomic_dir(plan.to) as tmp:
        if format == "hf":
            files.write_hf(plan, loaded, template, tmp)
        else:
            gguf, gguf_notes = files.write_gguf(plan, loaded, template, tmp)
            notes += gguf_notes
            if format == "ollama":
                files.write_modelfile(plan, loaded.tokenizer, template, gguf, tmp)
        card.write_card(plan, loaded.tokenizer, template, checked, tmp)
        (tmp / EXPORT_RECORD).write_text(
            json.dumps(
                {
                    "candidate": plan.name,
                    "format": format,
                    "adapter": adapter,
                    "quant": plan.quant,
                    "precision": plan.precision if format != "hf" else "f32",
                    "prompt_mode": prompt_mode,
                    "prompt": plan.cfg.as_dict(),
                    "settings": plan.settings,
                    "checked_examples": checked,
                },
                indent=2,
            )
        )
        written = sorted(p.name for p in tmp.iterdir())
    return ExportResult(plan.name, format, plan.to, written, prompt_mode, checked, notes)
