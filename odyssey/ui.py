"""Progress and status output for long steps, on stderr so that ``--json`` output stays clean.

Library code calls :func:`progress` / :func:`status`; they draw Rich progress bars in a
terminal and stay silent when ``ODYSSEY_QUIET=1`` (tests, scripting).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_console = None


def console():
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def quiet() -> bool:
    return os.environ.get("ODYSSEY_QUIET", "") not in {"", "0"}


class _Bar:
    def __init__(self, bar, task):
        self._bar, self._task = bar, task

    def advance(self, n: int = 1, **fields):
        if self._bar is not None:
            self._bar.update(self._task, advance=n, **({"info": _info(fields)} if fields else {}))

    def note(self, **fields):
        if self._bar is not None:
            self._bar.update(self._task, info=_info(fields))


def _info(fields: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


@contextmanager
def progress(description: str, total: int | None) -> Iterator[_Bar]:
    """A progress bar with rate and ETA; ``bar.advance(n, loss=0.3)`` moves it and shows fields."""
    if quiet():
        yield _Bar(None, None)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console(), transient=False) as bar:
        task = bar.add_task(description, total=total, info="")
        yield _Bar(bar, task)


@contextmanager
def status(message: str):
    """A spinner for a step of unknown length; ``update(text)`` changes its message."""
    if quiet():
        yield lambda text: None
        return
    with console().status(message) as spinner:
        yield lambda text: spinner.update(f"{message}: {text}")


def say(message: str):
    if not quiet():
        console().print(message)
