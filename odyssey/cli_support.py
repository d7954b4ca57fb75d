"""Helpers every CLI module shares (the main app and each stage's ``cli.py``). Standard library only
at import time: ``odyssey --help`` loads every CLI module."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def console():
    from odyssey.render import make_console

    return make_console()


def emit_json(payload) -> None:
    """The ``--json`` output: one JSON document on stdout (progress and notes go to stderr)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def load_project(project: Path):
    from odyssey.project import Project

    return Project.load(project)
