"""What every optimization method shares: which candidate it starts from, turning that candidate
into a plain transformers checkpoint, training items for recovery/distillation, and recording
the result as a candidate linked to its parent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.prompts import PromptConfig
from odyssey.store.candidates import Candidate

STAGE = "optimize"


# The candidate an optimization starts from: the store's Candidate (name, model_ref, prompt, id, config).
Parent = Candidate


def resolve_parent(project, which: str | Candidate | None) -> Candidate:
    """A candidate name, ``best`` (``Store.best``, else the first model) or any model reference, through
    ``Project.candidate``, the one resolver.

    A plain model reference becomes the ``<model>:zero-shot`` candidate, stored when missing, so
    every optimized candidate has a parent on the board.
    """
    from odyssey.store.candidates import UnknownCandidate

    which = which or project.spec.optimize.start_from
    try:
        found = project.candidate(which)
    except UnknownCandidate as exc:
        raise OdysseyError(f"no candidate or model named {which!r}", hint=exc.hint) from None
    return project.store.ensure(found)


def is_gguf_ref(ref: str) -> bool:
    return str(ref).lower().endswith(".gguf")


def hf_checkpoint(project, ref: str, work_dir: Path) -> Path:
    """A folder holding a plain (unquantized) transformers checkpoint for ``ref``.

    LoRA adapter folders (adapter_config.json without config.json) are merged into their base
    model first, so quantization, GGUF export and pruning see the fine-tuned weights.
    """
    from odyssey.models import parse_ref, resolve
    from odyssey.models.loading import is_x86_int8

    parsed = parse_ref(ref, project.root)
    if parsed.kind == "local":
        folder = Path(parsed.value)
        if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
            return merge_lora(project, folder, work_dir / "merged")
    path = Path(resolve(ref, project.root))
    config = json.loads((path / "config.json").read_text())
    if config.get("quantization_config") or is_x86_int8(path):
        method = "int8-x86" if is_x86_int8(path) else config["quantization_config"].get("quant_method", "quantized")
        raise OdysseyError(
            f"{ref} is already quantized ({method}); optimize its unquantized parent instead",
            hint="`odyssey status` shows each candidate's parent",
        )
    return path


def merge_lora(project, adapter_dir: Path, out: Path) -> Path:
    """Merge a PEFT LoRA adapter into its base model and save the merged checkpoint (safetensors)."""
    from peft import PeftModel

    from odyssey.models import load

    if (out / "config.json").exists():
        return out
    adapter_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    kind = str(adapter_cfg.get("peft_type", "LORA")).upper()
    if kind not in {"LORA", "DORA"}:
        raise OdysseyError(
            f"{adapter_dir} is a {kind} adapter: only LoRA adapters can be merged into the weights",
            hint="optimize the base model instead; the adapter's virtual tokens are not weights",
        )
    meta = adapter_dir / "odyssey-adapter.json"  # written by `odyssey finetune`: a portable base reference
    base_ref = json.loads(meta.read_text()).get("base") if meta.exists() else adapter_cfg.get("base_model_name_or_path")
    if not base_ref:
        raise OdysseyError(
            f"{adapter_dir}/adapter_config.json names no base model (base_model_name_or_path)",
            hint="set it to the model the adapter was trained on",
        )
    loaded = load(base_ref, root=project.root, dtype="float32")
    merged = PeftModel.from_pretrained(loaded.model, str(adapter_dir)).merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    loaded.tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def folder_size(path: Path) -> int:
    """Bytes of a model: one file, or the weights, config and tokenizer files of a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_size(path: Path) -> int:
    """Bytes of the weights alone (*.safetensors / *.gguf / *.bin)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in {".safetensors", ".gguf", ".bin"})


def record_candidate(project, run, name: str, model_ref: str, parent: Parent, method: dict) -> int:
    """Store the optimized model as a candidate linked to its parent, with the parent's prompt."""
    config = {
        "prompt": parent.prompt.as_dict(),
        "optimize": method,
        "parent": parent.name,
        "parent_model_ref": parent.model_ref,
    }
    return project.store.upsert_candidate(name, STAGE, str(model_ref), config, parent.id, run.id)


def candidate_name(parent: Parent, suffix: str) -> str:
    base = parent.name.removesuffix(":zero-shot")
    return f"{base}:{suffix}"


# ---- training items (pruning recovery, distillation) -------------------------------------------


def sft_items(tokenizer, cfg: PromptConfig, examples, max_length: int) -> list[dict]:
    """Training items exactly as the adapt stage makes them (:func:`odyssey.training.sft.encode_example`:
    the prompt as evaluation and serving render it, the chat template's answer turn, loss on the answer
    only), as dicts for :func:`collate`."""
    from odyssey.training.sft import IGNORE, encode_example

    items = []
    for ex in examples:
        if not ex.references:
            continue
        encoded = encode_example(tokenizer, cfg, ex, max_len=max_length)
        if any(label != IGNORE for label in encoded.labels):
            items.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
    if not items:
        raise OdysseyError(
            "no training items: the train split has no examples with references",
            hint="check scope.data (fields.target) in odyssey.yaml",
        )
    return items


def collate(pad_id: int):
    """Right-pad a list of items into tensors (labels padded with -100)."""

    def fn(items: list[dict]) -> dict:
        import torch

        width = max(len(i["input_ids"]) for i in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "index" in items[0]:
            batch["index"] = torch.tensor([i["index"] for i in items])
        return batch

    return fn


def save_model(model, tokenizer, out: Path, extra: dict | None = None) -> Path:
    """Save a checkpoint atomically (safetensors), plus odyssey-optimize.json describing it."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if extra:
        (tmp / "odyssey-optimize.json").write_text(json.dumps(extra, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
