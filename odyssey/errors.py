"""Errors a user can act on, and the exit codes the CLI maps them to.

Every mistake a user can make (a bad spec, a missing file, an unknown model) raises
:class:`OdysseyError` with a message that names the file, field and value and a hint on how
to fix it. The CLI prints these without a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: the traceback is printed
    USER_ERROR = 2  # bad spec, bad argument, missing file: fix the input and re-run
    GATES_FAILED = 3  # the run worked but the candidate misses a gate of the scope
    MISSING_DEPENDENCY = 4  # an optional extra is not installed
    UNAVAILABLE = 5  # a resource (hub, network, model file) cannot be reached


class OdysseyError(Exception):
    """A problem the user can fix. ``hint`` says how."""

    exit_code: ExitCode = ExitCode.USER_ERROR

    def __init__(self, message: str, *, hint: str | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems = problems or []

    def __str__(self) -> str:
        parts = [self.message, *(f"  - {p}" for p in self.problems)]
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class SpecError(OdysseyError):
    """odyssey.yaml (or another input file) is invalid."""


class MissingDependency(OdysseyError):
    exit_code = ExitCode.MISSING_DEPENDENCY


class Unavailable(OdysseyError):
    exit_code = ExitCode.UNAVAILABLE


def require(module: str, extra: str, what: str | None = None):
    """Import an optional dependency, or fail with the pip command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{what or module} needs the Python package '{module}', which is not installed ({exc}).",
            hint=f"pip install 'llm-odyssey[{extra}]'",
        ) from exc
