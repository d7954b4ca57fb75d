"""``odyssey serve``: pick the candidate(s), start their backends, run the gateway with uvicorn.

The entry function :func:`serve` first binds the listening socket (a taken port fails at once,
exit code 5, before any backend starts or anything says "serving"), then blocks until
SIGINT/SIGTERM. uvicorn's graceful shutdown stops accepting connections and waits for requests
in flight; then the lifespan drains the capture queue and stops the backends (llama-server
children included), so nothing answered is lost, and the process exits 0.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

from odyssey.errors import OdysseyError, Unavailable, require
from odyssey.spec import DeploySpec
from odyssey.store.candidates import Candidate


@dataclass
class CandidateChoice:
    name: str
    model_ref: str
    prompt: dict | None  # the stored prompt (None: the candidate was stored without one, served raw)
    candidate: Candidate | None = None
    asked: str | None = None  # the name it was asked by ('best', a candidate, a model reference)


def pick_candidates(project, names: list[str] | None) -> list[CandidateChoice]:
    """Each name through ``Project.candidate``, the one resolver: a stored name, 'best' (``Store.best``;
    with nothing scored yet, the first model zero-shot) or a model reference (zero-shot)."""
    from odyssey.store.candidates import UnknownCandidate

    chosen = []
    for name in list(names or [project.spec.deploy.candidate]):
        try:
            cand = project.candidate(name)
        except UnknownCandidate as exc:
            raise OdysseyError(f"{exc.message} to serve", hint=f"{exc.hint}; or use 'best'") from None
        chosen.append(CandidateChoice(cand.name, cand.model_ref, cand.config.get("prompt"), cand, name))
    return chosen


def build_app(
    project,
    candidates: list[str] | None = None,
    *,
    backend: str | None = None,
    settings: DeploySpec | None = None,
    capture: bool | None = None,
    on_stopped=None,
):
    """The gateway app for a project; backends start (and the capture writer opens) in its lifespan."""
    require("fastapi", "deploy", "odyssey serve")  # before the server module imports it
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
        engine = make_backend(
            kind,
            choice.model_ref,
            project.root,
            parallel=settings.parallel,
            context_length=settings.context_length,
            log_dir=log_dir,
        )
        cfg = PromptConfig.from_dict(choice.prompt) if choice.prompt else None
        if cfg is not None and cfg.shots and pool is None:
            pool = project.dataset().splits.get("train", [])
        aliases = ("best",) if choice.asked == "best" else ()
        served.append(Served(choice.name, choice.model_ref, engine, cfg, pool or [], settings.prompt_mode, aliases))
    use_capture = settings.capture if capture is None else capture
    writer = CaptureWriter(project.state_dir, project.spec.name, project.root) if use_capture else None

    async def startup():
        import asyncio

        try:
            if writer is not None:
                await asyncio.to_thread(writer.start)
            for s in served:
                await s.backend.start()
        except BaseException as exc:  # serve() re-raises it once uvicorn has given up
            app.state.startup_error = exc
            for s in served:
                await s.backend.stop()
            raise

    async def shutdown():
        import asyncio

        for s in served:
            await s.backend.stop()
        if writer is not None:
            await asyncio.to_thread(writer.close)
        if on_stopped is not None:
            on_stopped()

    _ = project.store  # open (and migrate) the store before serving
    app = create_app(project, served, settings, capture=writer, startup=startup, shutdown=shutdown)
    app.state.startup_error = None
    return app


ALL_INTERFACES = ("0.0.0.0", "::", "")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (uvicorn is handed it), so a taken port is found before
    anything starts. ``port`` 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OdysseyError(
            f"cannot listen on {host!r}: {exc.strerror}",
            hint="--host 127.0.0.1 (this machine only) or an address of this machine",
        ) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        taken = exc.errno in (98, 48)  # EADDRINUSE on Linux, macOS
        raise Unavailable(
            f"cannot listen on {host}:{port}: {exc.strerror}" + (" (another process holds this port)" if taken else ""),
            hint="pass another port (--port N), or --port 0 for any free one"
            + (f"; `ss -ltnp 'sport = :{port}'` shows who holds it" if taken else ""),
        ) from None
    sock.set_inheritable(True)
    return sock


def warn_exposure(project, host: str) -> None:
    from odyssey.deploy.keys import list_keys

    if host not in ALL_INTERFACES:
        return
    keys = list_keys(project.store)
    if not keys:
        sys.stderr.write(
            f"warning: listening on all interfaces ({host or '*'}) with no API keys: the docs and /health "
            "are reachable from other machines; every other route answers 401 until you create a key "
            "(odyssey keys create --name NAME). Use --host 127.0.0.1 to stay on this machine.\n"
        )
    else:
        sys.stderr.write(
            f"note: listening on all interfaces ({host or '*'}): anyone who can reach this machine can "
            f"try keys; {len(keys)} key(s) are active. Use --host 127.0.0.1 to stay local.\n"
        )


def serve(
    project,
    candidates: list[str] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    backend: str | None = None,
    log_level: str = "warning",
) -> None:
    from odyssey.store import deploy as sd

    uvicorn = require("uvicorn", "deploy", "odyssey serve")

    settings = project.spec.deploy
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    sock = bind(host, port)  # before anything else: a taken port ends here, exit code 5
    port = sock.getsockname()[1]
    try:
        warn_exposure(project, host)
        store = project.store
        holder: dict = {}

        def stopped():
            # Runs in the lifespan shutdown, after in-flight requests finished and the capture queue
            # was drained.
            store.set_summary(holder["run"], {"requests_captured": sd.count_requests(store)})
            store.finish_run(holder["run"], "succeeded")
            holder["done"] = True

        app = build_app(project, candidates, backend=backend, on_stopped=stopped)
        _announce(project, app, host, port)
        holder["run"] = store.start_run(
            "deploy",
            project.spec.as_dict(),
            {
                "candidates": list(app.state.gateway.models),
                "host": host,
                "port": port,
                "backend": backend or settings.backend,
            },
        )
        _run_until_stopped(uvicorn, app, sock, log_level, store, holder)
        if not holder.get("done"):
            _raise_startup_error(app)
    finally:
        sock.close()


def _announce(project, app, host: str, port: int) -> None:
    """Where it serves and what, on stderr (and how to get llama-server when a GGUF model runs in torch)."""
    from odyssey.deploy.backends import gguf_for

    shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    sys.stderr.write(f"odyssey serve: http://{shown}:{port}/ui/  (API at /v1, docs at /docs; stop with Ctrl-C)\n")
    for served in app.state.gateway.models.values():
        sys.stderr.write(f"serving {served.name} ({served.model_ref}) with the {served.backend.kind} backend\n")
        if served.backend.kind == "transformers" and gguf_for(served.model_ref, project.root) is not None:
            sys.stderr.write(
                "  note: llama-server is not built, so this GGUF model runs in torch (slower); "
                'build it once with `python -c "from odyssey.models import llamacpp; '
                "llamacpp.tool_path('llama-server')\"` or set ODYSSEY_LLAMA_SERVER\n"
            )


def _run_until_stopped(uvicorn, app, sock: socket.socket, log_level: str, store, holder: dict) -> None:
    """uvicorn on the bound socket until SIGINT/SIGTERM; the deploy run fails here when it never served."""
    import signal

    # uvicorn handles SIGINT/SIGTERM itself (graceful drain), then restores these handlers and
    # re-raises the signal: after a clean drain that is no error, so it is recorded, not fatal
    # (exit 0, not 143). A second signal during the drain still forces uvicorn out.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def after_drain(sig, frame):
        holder["signal"] = sig

    for sig in previous:
        signal.signal(sig, after_drain)
    try:
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=None)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not holder.get("done"):  # startup failed: the run failed
            store.finish_run(holder["run"], "failed", error="the server stopped before it started serving")


def _raise_startup_error(app) -> None:
    """Why the server stopped before it served: the startup's own OdysseyError, or Unavailable."""
    error = app.state.startup_error
    if isinstance(error, OdysseyError):
        raise error
    raise Unavailable(
        "the server stopped before it started serving" + (f": {error}" if error else ""),
        hint="see the messages above",
    )
