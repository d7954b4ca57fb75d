"""The options every CLI command shares, defined once: ``--project`` and ``--json``.

Only typer and the standard library (``odyssey --help`` imports every stage's CLI module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ProjectOpt = Annotated[Path, typer.Option("--project", "-p", help="project folder (holds odyssey.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON object on stdout instead of tables")]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine", help="what generates: auto | transformers | llamacpp | vllm | openai (default: evaluate.engine)"
    ),
]
