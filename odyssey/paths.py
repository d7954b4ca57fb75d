"""Where Odyssey keeps things outside a project: one home directory.

``ODYSSEY_HOME`` (default ``~/.cache/odyssey``) holds converted model checkpoints and other
caches shared by all projects. Tests point it at a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    root = Path(os.environ.get("ODYSSEY_HOME") or Path.home() / ".cache" / "odyssey")
    root.mkdir(parents=True, exist_ok=True)
    return root


def model_cache() -> Path:
    """Converted and built checkpoints; ``ODYSSEY_MODEL_CACHE`` moves it (tests share one across runs)."""
    override = os.environ.get("ODYSSEY_MODEL_CACHE")
    path = Path(override) if override else home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
