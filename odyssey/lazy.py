"""Lazy package exports (PEP 562), so ``odyssey --help`` imports a stage package without torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """``__getattr__`` and ``__all__`` for a package whose names live in the modules ``exports`` maps them to."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, list(exports)
