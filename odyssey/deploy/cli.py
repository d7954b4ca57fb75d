"""CLI for the deploy stage: ``odyssey keys``, ``odyssey serve``, ``odyssey feedback export``.
Imports only typer and the standard library at module level (``odyssey --help`` must stay fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load


def keys_create(
    name: Annotated[str, typer.Option("--name", help="who or what the key is for")],
    scope: Annotated[Optional[list[str]], typer.Option("--scope", help="inference | feedback | admin (repeat)")] = None,
    rpm: Annotated[Optional[int], typer.Option(help="requests per minute (default: deploy.rate_limit_rpm)")] = None,
    concurrency: Annotated[
        Optional[int], typer.Option(help="requests in flight (default: deploy.max_concurrency)")
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Create an API key. It is printed once; only its sha256 is stored."""
    from odyssey.deploy.keys import create_key

    new = create_key(_load(project).store, name, scope, rpm, concurrency)
    if as_json:
        _emit({"id": new.id, "name": new.name, "key": new.key, "prefix": new.prefix, "scopes": new.scopes})
        return
    console = _console()
    console.print(f"key for [bold]{new.name}[/] (scopes: {', '.join(new.scopes)}); it is shown only now:")
    console.print(new.key, markup=False, highlight=False, soft_wrap=True)


def keys_list(
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
):
    """List keys (name, prefix, scopes, limits, last use); never the keys themselves."""
    from odyssey.deploy.keys import list_keys

    rows = list_keys(_load(project).store, include_revoked=all_)
    if as_json:
        _emit(rows)
        return
    from odyssey.render import keys_table

    _console().print(keys_table(rows))


def keys_revoke(
    name: Annotated[str, typer.Argument(help="key name or prefix (see odyssey keys list)")],
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Revoke keys by name or prefix; requests with them get 401 at once."""
    from odyssey.deploy.keys import revoke

    n = revoke(_load(project).store, name)
    if as_json:
        _emit({"revoked": n})
    else:
        _console().print(f"revoked {n} key(s)")


def serve(
    project: ProjectOpt = Path("."),
    candidate: Annotated[
        Optional[list[str]], typer.Option(help="candidate name or 'best' (repeat to serve several)")
    ] = None,
    host: Annotated[
        Optional[str],
        typer.Option(
            help="address to listen on (default: deploy.host, 127.0.0.1: "
            "this machine only; 0.0.0.0 for every interface)"
        ),
    ] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default: deploy.port; 0: any free port)")] = None,
    backend: Annotated[Optional[str], typer.Option(help="auto | transformers | llama.cpp | vllm")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
):
    """Serve candidates: OpenAI-compatible API + web UI on one port, with keys, limits and capture."""
    from odyssey.deploy.serve import serve as run
    from odyssey.errors import OdysseyError

    if backend is not None and backend not in ("auto", "transformers", "llama.cpp", "vllm"):
        raise OdysseyError(f"unknown backend {backend!r}", hint="auto | transformers | llama.cpp | vllm")
    # serve() binds the port before anything starts (taken: exit 5), then prints where it listens
    run(_load(project), candidate, host=host, port=port, backend=backend, log_level=log_level)


def feedback_export(
    format: Annotated[str, typer.Option("--format", help="preference | sft")] = "preference",
    out: Annotated[Optional[Path], typer.Option(help="output JSONL file")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Write captured feedback as JSONL: preference pairs for align, or prompt/completion rows for SFT."""
    from odyssey.deploy.export import export_feedback

    path, n = export_feedback(_load(project), format, out)
    if as_json:
        _emit({"path": str(path), "rows": n, "format": format})
    else:
        _console().print(f"wrote {n} {format} row(s) to {path}")


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API keys for odyssey serve: create (shown once), list, revoke.", no_args_is_help=True)
    feedback = typer.Typer(help="Captured feedback: export preference pairs or SFT data.", no_args_is_help=True)
    app.add_typer(keys, name="keys")
    app.add_typer(feedback, name="feedback")
    keys.command("create")(keys_create)
    keys.command("list")(keys_list)
    keys.command("revoke")(keys_revoke)
    app.command()(serve)
    feedback.command("export")(feedback_export)
