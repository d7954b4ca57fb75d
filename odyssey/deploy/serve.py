"""``odyssey serve``: pick the candidate(s), start their backends, run the gateway with uvicorn.

The entry function :func:`serve` blocks until SIGINT/SIGTERM. uvicorn's graceful shutdown stops
accepting connections and waits for requests in flight; then the lifespan drains the capture
queue and stops the backends (llama-server children included), so nothing answered is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.spec import DeploySpec


@dataclass
class CandidateChoice:
    name: str
    model_ref: str
    prompt: dict | None


def pick_candidates(project, names: list[str] | None) -> list[CandidateChoice]:
    """Names from the store ('best' = the board's best; with no candidates yet, the first model zero-shot)."""
    from odyssey.evaluate import candidate_setup

    names = list(names or [project.spec.deploy.candidate])
    chosen = []
    for name in names:
        if name == "best":
            from odyssey.evaluate.board import build_board

            board = build_board(project)
            stored = project.store.candidates()
            if board.best:
                name = board.best
            elif stored:
                name = stored[-1]["name"]
            else:
                cand, ref, cfg, _ = candidate_setup(project, None, None)
                chosen.append(CandidateChoice(cand, ref, cfg.as_dict()))
                continue
        row = project.store.candidate(name)
        if row is None:
            known = ", ".join(c["name"] for c in project.store.candidates()) or "none yet (run odyssey eval or prompt)"
            raise OdysseyError(f"no candidate named {name!r} to serve", hint=f"candidates: {known}; or use 'best'")
        chosen.append(CandidateChoice(row["name"], row["model_ref"], (row["config"] or {}).get("prompt")))
    return chosen


def build_app(project, candidates: list[str] | None = None, *, backend: str | None = None,
              settings: DeploySpec | None = None, capture: bool | None = None, on_stopped=None):
    """The gateway app for a project; backends start (and the capture writer opens) in its lifespan."""
    from odyssey.deploy.backends import make_backend
    from odyssey.deploy.capture import CaptureWriter
    from odyssey.deploy.server import Served, create_app
    from odyssey.prompts import PromptConfig

    settings = settings or project.spec.deploy
    kind = backend or settings.backend
    choices = pick_candidates(project, candidates)
    log_dir = project.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    served = []
    pool = None
    for choice in choices:
        engine = make_backend(kind, choice.model_ref, project.root, parallel=settings.parallel,
                              context_length=settings.context_length, log_dir=log_dir)
        cfg = PromptConfig.from_dict(choice.prompt) if choice.prompt else None
        if cfg is not None and cfg.shots and pool is None:
            pool = project.dataset().splits.get("train", [])
        served.append(Served(choice.name, choice.model_ref, engine, cfg, pool or [], settings.prompt_mode))
    use_capture = settings.capture if capture is None else capture
    writer = CaptureWriter(project.state_dir, project.spec.name, project.root) if use_capture else None

    async def startup():
        import asyncio

        if writer is not None:
            await asyncio.to_thread(writer.start)
        for s in served:
            await s.backend.start()

    async def shutdown():
        for s in served:
            await s.backend.stop()
        if writer is not None:
            import asyncio

            await asyncio.to_thread(writer.close)
        if on_stopped is not None:
            on_stopped()

    project.store  # open (and migrate) the store before serving
    return create_app(project, served, settings, capture=writer, startup=startup, shutdown=shutdown)


def serve(project, candidates: list[str] | None = None, *, host: str | None = None, port: int | None = None,
          backend: str | None = None, log_level: str = "warning") -> None:
    import uvicorn

    from odyssey.store import deploy as sd

    settings = project.spec.deploy
    store = project.store
    holder: dict = {}

    def stopped():
        # Runs in the lifespan shutdown, after in-flight requests finished and the capture queue
        # was drained: uvicorn re-raises SIGTERM once it returns, so nothing after uvicorn.run runs.
        store.set_summary(holder["run"], {"requests_captured": sd.count_requests(store)})
        store.finish_run(holder["run"], "succeeded")
        holder["done"] = True

    app = build_app(project, candidates, backend=backend, on_stopped=stopped)
    import sys

    from odyssey.deploy.backends import gguf_for

    for served in app.state.gateway.models.values():
        sys.stderr.write(f"serving {served.name} ({served.model_ref}) with the {served.backend.kind} backend\n")
        if served.backend.kind == "transformers" and gguf_for(served.model_ref, project.root) is not None:
            sys.stderr.write("  note: llama-server is not built, so this GGUF model runs in torch (slower); build it "
                             "once with `python -c \"from odyssey.models import llamacpp; "
                             "llamacpp.tool_path('llama-server')\"` or set ODYSSEY_LLAMA_SERVER\n")
    holder["run"] = store.start_run("deploy", project.spec.as_dict(), {
        "candidates": list(app.state.gateway.models), "host": host or settings.host, "port": port or settings.port,
        "backend": backend or settings.backend})
    try:
        uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level=log_level,
                    timeout_graceful_shutdown=None)
    finally:
        if not holder.get("done"):  # startup failed (e.g. the port is taken): the run failed
            store.finish_run(holder["run"], "failed", error="the server stopped before it started serving")
