"""``odyssey export CANDIDATE --format hf|gguf|ollama --to DIR``. Imports only typer and the standard
library at module level (``odyssey --help`` must stay fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        candidate: Annotated[str, typer.Argument(help="candidate name (odyssey board lists them) or 'best'")],
        format: Annotated[str, typer.Option("--format", help="hf | gguf | ollama")],
        to: Annotated[Path, typer.Option("--to", help="folder to write (new or empty; --force replaces it)")],
        adapter: Annotated[
            bool, typer.Option("--adapter", help="hf: the PEFT adapter folder instead of merged weights")
        ] = False,
        quant: Annotated[
            Optional[str],
            typer.Option(
                "--quant", help="gguf/ollama: quantize (q8_0, q4_k_m, ...); answers then differ from the evaluated ones"
            ),
        ] = None,
        precision: Annotated[
            str, typer.Option("--precision", help="gguf/ollama: f32 (answers as evaluated) | f16 | bf16")
        ] = "f32",
        prompt_mode: Annotated[
            str,
            typer.Option(
                "--prompt-mode",
                help="task: the chat template is the evaluated "
                "prompt around the user's message | chat: the model's own",
            ),
        ] = "task",
        force: Annotated[bool, typer.Option("--force", help="replace a non-empty --to folder")] = False,
        project: ProjectOpt = Path("."),
        as_json: JsonOpt = False,
    ):
        """Export a candidate: a Hugging Face folder (merged or adapter), a GGUF file, or an Ollama Modelfile
        and GGUF, with its chat template, stop tokens and a model card, answering as it was evaluated."""
        from odyssey.deploy.export_formats import export_candidate

        result = export_candidate(
            _load(project),
            candidate,
            format,
            to,
            adapter=adapter,
            quant=quant,
            precision=precision,
            prompt_mode=prompt_mode,
            force=force,
        )
        if as_json:
            _emit(result.as_dict())
            return
        console = _console()
        console.print(f"exported {result.candidate} as {result.format} to {result.path}: {', '.join(result.files)}")
        if result.checked_examples:
            console.print(f"the chat template reproduces the evaluated prompt on {result.checked_examples} examples")
        for note in result.notes:
            console.print(f"note: {note}")
