"""Checkpoint files on disk: written atomically, hashed by content, LoRA merged into its base.

Atomic writes: everything is written into ``<out>.partial-<pid>`` and renamed into place with one
``os.replace``, so a crash or ``kill -9`` never leaves a half-written folder that a later run
would take for a finished one; the next write of the same folder removes what a dead writer left.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# The files that decide what a checkpoint computes (weights, architecture, tokenizer, template).
CONTENT_PATTERNS = (
    "*.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "chat_template*",
    "*.model",
    "adapter_config.json",
    "odyssey-adapter.json",
    "odyssey-*.json",
    "*.gguf",
    "vocab*",
    "merges.txt",
)


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``out_dir`` only if the block finishes."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_dead_partials(out_dir: Path) -> None:
    """Scratch folders of ``out_dir`` whose writer is gone (killed mid-write); a live writer's stays."""
    from odyssey.store import pid_alive

    for stale in out_dir.parent.glob(f"{glob.escape(out_dir.name)}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def atomic_file(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` then rename ``tmp`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def content_hash(folder: Path, extra: str = "") -> str:
    """sha256 over the files that decide a checkpoint's outputs (names and bytes), plus ``extra``."""
    folder = Path(folder)
    digest = hashlib.sha256(extra.encode())
    files = sorted({p for pattern in CONTENT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def adapter_kind(folder: Path) -> str | None:
    """'LORA', 'PROMPT_TUNING', ... for a PEFT adapter folder without full weights; else None."""
    config = Path(folder) / "adapter_config.json"
    if not config.exists() or (Path(folder) / "config.json").exists():
        return None
    return str(json.loads(config.read_text()).get("peft_type", "")).upper() or None


def save_merged(loaded, out_dir: Path) -> Path:
    """Fold a loaded LoRA model into its base and save a plain safetensors checkpoint, atomically."""
    model = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
    return Path(out_dir)
