"""Turn a model reference into a local transformers checkpoint, and load it.

GGUF files (packaged or local) are dequantized once into a cached safetensors checkpoint:
transformers loads a GGUF with ``gguf_file=`` but marks the model as GGUF-quantized, and then
``Trainer`` and ``save_pretrained`` refuse it. So the architecture is rebuilt from the config
without ``quantization_config``, the dequantized state dict is loaded into it, and that clean
model is saved. Every later stage (training, serving, export) uses the clean copy.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError, Unavailable
from odyssey.models.refs import PACKAGED, ModelRef, parse_ref
from odyssey.paths import model_cache

FAMILY_DECODER = "decoder-only"
FAMILY_ENCODER = "encoder-only"
FAMILY_SEQ2SEQ = "encoder-decoder"


def family_of(config) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return FAMILY_SEQ2SEQ
    archs = " ".join(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "")
    if (
        model_type
        in {
            "bert",
            "roberta",
            "distilbert",
            "deberta",
            "deberta-v2",
            "electra",
            "albert",
            "xlm-roberta",
            "modernbert",
            "mpnet",
        }
        or "ForMaskedLM" in archs
    ):
        return FAMILY_ENCODER
    return FAMILY_DECODER


@dataclass
class LoadedModel:
    ref: str
    path: Path
    model: Any
    tokenizer: Any
    family: str
    dtype: str

    @property
    def config(self):
        return self.model.config

    @property
    def n_params(self) -> int:
        n = sum(p.numel() for p in self.model.parameters())
        if is_x86_int8(self.path):  # int8 layers keep their weights packed, outside parameters()
            from odyssey.models.x86_int8 import packed_params

            n += packed_params(self.model)
        return n

    @property
    def context_length(self) -> int:
        return context_length(self.model.config, self.tokenizer)


def context_length(config, tokenizer=None) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 512


def _progress_message(progress, text: str):
    if progress is not None:
        progress(text)


def convert_gguf(gguf_path: Path, out_dir: Path, progress=None) -> Path:
    """Dequantize a GGUF file into a clean safetensors checkpoint (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _progress_message(progress, f"reading {gguf_path.name} (dequantizing GGUF weights)")
    kwargs = {"gguf_file": gguf_path.name}
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = AutoConfig.from_pretrained(gguf_path.parent, **kwargs)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    _progress_message(progress, "rebuilding the architecture without quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise OdysseyError(
            f"converting {gguf_path.name}: weights do not match the architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    clean.tie_weights()
    _progress_message(progress, f"saving safetensors to {out_dir}")
    clean.save_pretrained(tmp, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    tokenizer.save_pretrained(tmp)
    (tmp / "odyssey-source.json").write_text(json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size}))
    del quantized
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)  # atomic: a half-written conversion is never taken for a finished one
    return out_dir


def resolve(ref: str | ModelRef, root: Path | None = None, progress=None) -> Path:
    """A local folder holding a transformers checkpoint for ``ref``; converts or builds it on first use."""
    parsed = ref if isinstance(ref, ModelRef) else parse_ref(ref, root)
    if parsed.kind == "local":
        path = Path(parsed.value)
        if (path / "config.json").exists() or (path / ADAPTER_CONFIG).exists():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        return resolve(ModelRef("gguf", str(ggufs[0]), parsed.raw), root, progress)
    if parsed.kind == "tiny":
        from odyssey.models.tiny import build_tiny, tiny_key

        out = model_cache() / f"tiny-{parsed.value}-{tiny_key(parsed.value)}"
        if not (out / "config.json").exists():
            build_tiny(parsed.value, out)
        return out
    if parsed.kind == "packaged":
        packaged = PACKAGED[parsed.value]
        if packaged.kind == "embedding":
            return packaged.weights_file().parent
        out = model_cache() / f"packaged-{parsed.value}"
        if not (out / "config.json").exists():
            convert_gguf(packaged.weights_file(), out, progress)
        return out
    if parsed.kind == "gguf":
        source = Path(parsed.value)
        stat = source.stat()
        out = model_cache() / f"gguf-{parsed.slug}-{stat.st_size}-{int(stat.st_mtime)}"
        if not (out / "config.json").exists():
            convert_gguf(source, out, progress)
        return out
    return _resolve_hub(parsed.value)


def _resolve_hub(hub_id: str) -> Path:
    """Real hub download (snapshot); offline or unknown ids become a clear error."""
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.md", "*.jinja", "tokenizer*"]
            )
        )
    except Exception as exc:
        raise Unavailable(
            f"could not fetch {hub_id!r} from the Hugging Face hub: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            hint="check the id and the network; offline, use packaged:<name>, a local folder or a .gguf file",
        ) from None


def pick_dtype(requested: str = "auto"):
    """fp32 on CPUs (no fast bf16 units on most); bf16 on GPUs that support it, else fp16."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


X86_INT8_MARKER = "odyssey-int8.json"


def is_x86_int8(path) -> bool:
    """An int8 folder for PyTorch's x86 engine (``odyssey.models.x86_int8``), which needs its own loader."""
    return path is not None and (Path(path) / X86_INT8_MARKER).exists()


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_META = "odyssey-adapter.json"  # {"base": "<model ref>"}: portable, unlike peft's absolute base path


def load_adapter(ref: str, path: Path, *, root: Path | None = None, dtype: str = "auto", progress=None) -> LoadedModel:
    """A PEFT adapter folder (LoRA, prompt tuning; written by ``odyssey finetune``): its base model + the adapter."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    meta = path / ADAPTER_META
    if meta.exists():
        base_ref = json.loads(meta.read_text())["base"]
    else:
        base_ref = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base_ref:
        raise OdysseyError(
            f"{path} is an adapter without a base model reference",
            hint=f'write {ADAPTER_META} with {{"base": "<model ref>"}} next to it',
        )
    base = load(base_ref, root=root, dtype=dtype, progress=progress)
    _progress_message(progress, f"applying the adapter in {path.name}")
    model = PeftModel.from_pretrained(base.model, path).to(device())
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else base.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(ref, path, model, tokenizer, base.family, base.dtype)


# Pickle checkpoints (PyTorch CVE-2025-32434; LLaMA-Factory CVE-2025-53002): a .bin/.pt/.pth file
# is loaded only if it loads with ``weights_only=True`` (tensors and plain containers, no code),
# unless pickle is allowed (``ODYSSEY_ALLOW_PICKLE=1``, or ``allow_pickle=True``; the spec's
# ``allow_pickle: true`` is meant to set it) for files whose origin the user trusts.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def pickle_allowed(allow_pickle: bool | None = None) -> bool:
    if allow_pickle is not None:
        return allow_pickle
    return os.environ.get("ODYSSEY_ALLOW_PICKLE", "").strip().lower() in ("1", "true", "yes")


def check_pickles(path: Path, allow_pickle: bool | None = None) -> bool:
    """The ``weights_only`` value to load the checkpoint in ``path`` with.

    A folder with safetensors weights is never read through pickle (transformers prefers them).
    Otherwise each pickle weight file is opened with ``torch.load(weights_only=True)``, which runs
    no code from the file; one that needs more is refused with the reason, unless pickle is
    allowed."""
    path = Path(path)
    if not path.is_dir() or list(path.glob("*.safetensors")):
        return True
    files = sorted(f for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES and f.name != "training_args.bin")
    if not files:
        return True
    import pickle

    import torch

    for f in files:
        try:
            torch.load(f, map_location="meta", weights_only=True)
        except pickle.UnpicklingError as exc:
            if pickle_allowed(allow_pickle):
                return False
            reason = next(
                (line.strip() for line in str(exc).splitlines() if "Unsupported" in line or "GLOBAL" in line),
                str(exc).splitlines()[0][:200],
            )
            raise OdysseyError(
                f"{f} is a pickle checkpoint that does not load with weights_only=True, so loading it could run "
                f"code from the file ({reason})",
                hint="convert it to safetensors where it was made (model.save_pretrained(..., safe_serialization=True)),"
                " or, only if you trust where it came from, allow pickle (ODYSSEY_ALLOW_PICKLE=1 / allow_pickle: "
                "true)",
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise OdysseyError(f"{f} is not a readable PyTorch checkpoint: {str(exc).splitlines()[0][:200]}") from None
    return True


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(
    ref: str,
    *,
    root: Path | None = None,
    dtype: str = "auto",
    progress=None,
    head: str | None = None,
    allow_pickle: bool | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer by reference, choosing the class from the architecture family.

    ``head`` forces a class: 'causal-lm', 'seq2seq-lm', 'masked-lm' or 'sequence-classification'.
    Pickle weight files must load with ``weights_only=True`` unless ``allow_pickle`` (see
    :func:`check_pickles`).
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # Odyssey shows its own status; one bar per weight file is noise
    path = resolve(ref, root, progress)
    if (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists():
        return load_adapter(ref, path, root=root, dtype=dtype, progress=progress)
    config = AutoConfig.from_pretrained(path)
    family = family_of(config)
    classes = {
        "causal-lm": AutoModelForCausalLM,
        "seq2seq-lm": AutoModelForSeq2SeqLM,
        "masked-lm": AutoModelForMaskedLM,
        "sequence-classification": AutoModelForSequenceClassification,
    }
    default_head = {FAMILY_DECODER: "causal-lm", FAMILY_SEQ2SEQ: "seq2seq-lm", FAMILY_ENCODER: "masked-lm"}[family]
    cls = classes[head or default_head]
    torch_dtype = pick_dtype(dtype)
    if is_x86_int8(path):
        from odyssey.models import x86_int8

        _progress_message(progress, f"loading {ref} ({family}, int8 for the x86 engine)")
        model, torch_dtype = x86_int8.load(path, cls), torch.qint8
    else:
        weights_only = check_pickles(path, allow_pickle)
        _progress_message(progress, f"loading {ref} ({family}, {str(torch_dtype).removeprefix('torch.')})")
        extra = {} if weights_only else {"weights_only": False}
        model = cls.from_pretrained(path, dtype=torch_dtype, **extra).to(device())
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedModel(ref, path, model, tokenizer, family, str(torch_dtype).removeprefix("torch."))
