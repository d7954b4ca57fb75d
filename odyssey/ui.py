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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
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


# ---- library output -------------------------------------------------------------------------------
# Libraries write warnings, log lines and tqdm bars straight to the terminal (lance's deprecation notes,
# transformers' "Loading weights" bars, bm25s's DEBUG lines). Unless --verbose asks for them, they go to
# a log file, and what is left on the terminal is Odyssey's own output.

# Environment switches the libraries read when they are imported (set only where the user has not).
QUIET_LIBRARY_ENV = {
    "TQDM_DISABLE": "1",  # every tqdm bar, including those that bypass the libraries' own switches
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "LANCEDB_LOG": "error",  # lance's Rust logger writes to stderr itself; keep its errors only
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_configured: dict = {}


def configure_library_output(verbose: bool = False, log_file=None):
    """Route library logging, warnings and progress bars: to stderr with ``verbose``, else to ``log_file``.

    Cheap at start-up (nothing heavy is imported): the libraries are quietened through their
    environment switches, and through their own APIs right after they are first imported."""
    import logging
    import sys
    from pathlib import Path

    verbose = verbose or os.environ.get("ODYSSEY_VERBOSE", "") not in {"", "0"}
    root = logging.getLogger()
    for handler in _configured.get("handlers", []):
        root.removeHandler(handler)
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.INFO)
        _configured.update(handlers=[handler], log_file=None, verbose=True)
    else:
        for name, value in QUIET_LIBRARY_ENV.items():
            os.environ.setdefault(name, value)
        log_file = Path(log_file) if log_file else default_log_file()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, delay=True, encoding="utf-8")  # created at the first line
        handler.setLevel(logging.INFO)
        _configured.update(handlers=[handler], log_file=log_file, verbose=False)
        _after_import("transformers", _quiet_transformers)
        _after_import("huggingface_hub", lambda module: module.utils.disable_progress_bars())
        _after_import("datasets", _quiet_datasets)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    # A handler on the root logger first also turns later logging.basicConfig() calls in libraries into no-ops.
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _route_warnings(to_log=not verbose)
    return _configured["log_file"]


def verbose() -> bool:
    """Whether library output is shown (``--verbose``); False before configure_library_output ran."""
    return bool(_configured.get("verbose"))


def default_log_file():
    from odyssey.paths import home

    return home() / "logs" / "odyssey.log"


class OdysseyWarning(UserWarning):
    """A warning meant for the user (``warnings.warn(..., OdysseyWarning)``): always shown on stderr."""


def _route_warnings(to_log: bool) -> None:
    """Library warnings go to the log; OdysseyWarning (and every warning under --verbose) stays on stderr.
    By category, not by file: a library warning names the Odyssey line that called the library."""
    import logging
    import warnings

    original = _configured.setdefault("showwarning", warnings.showwarning)
    if not to_log:
        warnings.showwarning = original
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, OdysseyWarning):
            original(message, category, filename, lineno, file, line)
        else:
            logging.getLogger("py.warnings").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)

    warnings.showwarning = showwarning


def _quiet_transformers(module) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()  # its own stderr handler; propagate to the log file instead
    hf_logging.enable_propagation()


def _quiet_datasets(module) -> None:
    module.disable_progress_bars()
    module.utils.logging.disable_default_handler()
    module.utils.logging.enable_propagation()


def _after_import(name: str, hook) -> None:
    """Run ``hook(module)`` once ``name`` is imported (now, if it already is)."""
    import sys

    if name in sys.modules:
        _run_hook(hook, sys.modules[name])
        return
    finder = next((f for f in sys.meta_path if isinstance(f, _AfterImportFinder)), None)
    if finder is None:
        finder = _AfterImportFinder()
        sys.meta_path.insert(0, finder)
    finder.hooks[name] = hook


def _run_hook(hook, module) -> None:
    try:
        hook(module)
    except Exception:  # a library that moved its API: its output is noisier, nothing breaks
        import logging

        logging.getLogger("odyssey").debug("could not quieten %s", module.__name__, exc_info=True)


class _AfterImportFinder:
    """A meta-path finder that wraps the loader of a few top-level modules to call a hook after they load."""

    def __init__(self):
        self.hooks: dict = {}

    def find_spec(self, name, path=None, target=None):
        if name not in self.hooks:
            return None
        import importlib.machinery

        hook = self.hooks.pop(name)
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _HookedLoader(spec.loader, hook)
        return spec


class _HookedLoader:
    def __init__(self, loader, hook):
        self._loader, self._hook = loader, hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_hook(self._hook, module)

    def __getattr__(self, name):  # get_resource_reader, is_package, get_data ...: the real loader's
        return getattr(self._loader, name)
