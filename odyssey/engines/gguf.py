"""A candidate as a GGUF file for llama.cpp: converted once, cached by content hash.

* A plain checkpoint (a packaged model's dequantized copy, a full fine-tune, a distilled or pruned
  student) is converted with llama.cpp's ``convert_hf_to_gguf.py`` at ``f32`` by default: the
  transformers reference runs fp32 on a CPU, so the same weights in the same precision give the
  same greedy answers (f16/bf16 are options that trade a little agreement for bandwidth).
* A LoRA candidate is **merged** into its base first, then converted. Merged, it is one f32 file
  that computes exactly ``W + BA`` as transformers does, and decodes at the base model's speed;
  llama.cpp's runtime adapter (``--lora``) would add two small matmuls per projection per token
  and needs the same base conversion anyway. The merged checkpoint is cached too.
* A GGUF candidate (``odyssey optimize quantize --to gguf:...``) is its own runtime: used as is.
* Soft prompts (prompt tuning) and Odyssey's int8 runtimes cannot be expressed in GGUF: they stay
  on the transformers engine (:class:`CannotRun` says why).

Files live in ``<model cache>/gguf/<sha256 prefix>-<precision>.gguf``; the hash covers the
weights, config and tokenizer files and the llama.cpp version, so a changed candidate or a new
converter gets a new file and an unchanged one is never converted twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.paths import model_cache


class CannotRun(OdysseyError):
    """This candidate cannot run on the llama.cpp engine; ``reason`` says why."""


def _own_gguf(ref: str, root: Path | None) -> Path | None:
    from odyssey.models import PACKAGED, parse_ref

    parsed = parse_ref(ref, root)
    if parsed.kind == "gguf":
        return Path(parsed.value)
    if parsed.kind == "local":
        folder = Path(parsed.value)
        if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
            found = sorted(folder.glob("*.gguf"))
            return found[0] if found else None
    if parsed.kind == "packaged" and PACKAGED[parsed.value].kind == "embedding":
        raise CannotRun(f"{ref} is an embedding model: it does not generate text")
    return None


def check_convertible(folder: Path) -> None:
    """Raise :class:`CannotRun` for what GGUF cannot hold."""
    from odyssey.models.checkpoint import adapter_kind
    from odyssey.models.loading import is_x86_int8

    kind = adapter_kind(folder)
    if kind == "PROMPT_TUNING" or (kind and kind != "LORA"):
        raise CannotRun(
            f"{folder.name} is a soft-prompt ({kind.lower()}) candidate: its learned prompt vectors "
            "have no GGUF form, so only the transformers engine runs it",
            hint="use --engine transformers (auto does this by itself)",
        )
    if is_x86_int8(folder):
        raise CannotRun(
            f"{folder.name} is an int8 candidate for PyTorch's x86 engine: it runs in its own runtime",
            hint="use --engine transformers; for llama.cpp, quantize to gguf:q8_0 instead",
        )
    config = folder / "config.json"
    if config.exists():
        data = json.loads(config.read_text())
        if data.get("quantization_config"):
            raise CannotRun(
                f"{folder.name} holds quantized ({data['quantization_config'].get('quant_method', '?')}) "
                "weights that llama.cpp's converter does not read",
                hint="use --engine transformers",
            )
        if data.get("is_encoder_decoder"):
            raise CannotRun(
                f"{folder.name} is an encoder-decoder model; Odyssey runs those on transformers",
                hint="use --engine transformers",
            )


def merged_folder(ref: str, folder: Path, root: Path | None) -> Path:
    """A LoRA candidate folded into its base, cached by the adapter's (and base's) content."""
    from odyssey.models import load
    from odyssey.models.checkpoint import content_hash, save_merged
    from odyssey.models.loading import ADAPTER_META

    meta = folder / ADAPTER_META
    base = json.loads(meta.read_text()).get("base", "") if meta.exists() else ""
    out = model_cache() / "merged" / content_hash(folder, extra=base)[:24]
    if not (out / "config.json").exists():
        from odyssey import ui

        with ui.status(f"merging the LoRA adapter of {ref} into its base (once)"):
            save_merged(load(ref, root=root, dtype="float32"), out)
    return out


def gguf_for(ref: str, root: Path | None = None, precision: str = "f32") -> tuple[Path, str]:
    """(GGUF file, how it was made) for a candidate reference; converts on first use."""
    from odyssey.models import llamacpp
    from odyssey.models.checkpoint import adapter_kind, content_hash
    from odyssey.models.loading import resolve

    own = _own_gguf(ref, root)
    if own is not None:
        return own, "the candidate's own GGUF file"
    folder = resolve(ref, root)
    check_convertible(folder)
    how = f"converted to GGUF ({precision})"
    if adapter_kind(folder) == "LORA":
        folder = merged_folder(ref, folder, root)
        how = f"LoRA merged into its base, converted to GGUF ({precision})"
    key = content_hash(folder, extra=f"{precision}:{llamacpp.version()}")[:24]
    out = model_cache() / "gguf" / f"{key}-{precision}.gguf"
    if not out.exists():
        try:
            llamacpp.convert_hf_to_gguf(folder, out, precision, token_ids_only=True)
        except OdysseyError as exc:
            raise CannotRun(
                f"llama.cpp's converter cannot convert {ref}: {exc.message.splitlines()[0]}",
                hint="use --engine transformers",
            ) from None
    return out, how
