"""Where Odyssey keeps things outside a project: one home directory.

``ODYSSEY_HOME`` (default ``~/.cache/odyssey``) holds converted model checkpoints and other
caches shared by all projects. Tests point it at a temporary directory. ``check_name`` is the one
rule for names a user gives that become folder or file names (candidates, pretrained models).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from odyssey.errors import OdysseyError


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


# A name that becomes one folder or file under a store (a candidate, a pretrained model, a collection)
# must stay one path component: no separator, no NUL or control character, not '.' or '..' (or any
# leading dot: hidden, and '..' in disguise), no leading '-' (it would read as a CLI option).
_NOT_IN_NAMES = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_NAME = 200


def check_name(name: str, what: str) -> str:
    """``name`` unchanged when it is safe as one path component under a store, else an OdysseyError."""
    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "is empty"
    elif len(name) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} characters"
    elif _NOT_IN_NAMES.search(name):
        problem = "holds a '/', '\\', NUL or control character"
    elif name.startswith((".", "-")) or name != name.strip():
        problem = "starts with '.' or '-', or with or before a space"
    if problem:
        raise OdysseyError(
            f"the {what} {name!r} {problem}: it would name a path outside the project's stores",
            hint="use letters, digits and '-', '_', '.', ':', '@' (e.g. tiny-llama:lora-2)",
        )
    return name


def inside(base: Path, name: str, what: str) -> Path:
    """``base / name`` for a checked ``name``, refused when it resolves outside ``base`` (a symlink there)."""
    path = Path(base) / check_name(name, what)
    if not path.resolve().is_relative_to(Path(base).resolve()):
        raise OdysseyError(
            f"the {what} {name!r} resolves to {path.resolve()}, outside {base}",
            hint=f"remove the link at {path}, or choose another name",
        )
    return path
