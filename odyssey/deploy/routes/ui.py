"""The web UI's data calls (/ui/api/...: the board, report plots, the compare queue) and its
static files (/ui/), which hold no data and are open."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from odyssey.deploy.gateway import Gateway
from odyssey.deploy.wire import KEYED_ERRORS, APIError, BoardOut, PairOut, error_docs, ok_doc

STATIC = Path(__file__).parent.parent / "static"
PLOT = "report-plot"  # the only artifact kind the UI serves

router = APIRouter(tags=["ui"])


@router.get("/", include_in_schema=False)
async def root():
    return RedirectResponse("/ui/")


@router.get("/ui/api/board", responses={**KEYED_ERRORS, **ok_doc(BoardOut, "the board (candidates, gates, plots)")})
async def board(request: Request):
    from odyssey.evaluate.board import build_board

    gw = Gateway.of(request)
    data = build_board(gw.project).as_dict()  # a few indexed queries, on the loop's thread like all store reads
    data["plots"] = report_plots(gw.project.store)
    data["served"] = list(gw.models)
    return data


def report_plots(store, limit: int = 4) -> list[dict]:
    """The newest report plots, each with what it shows: its evaluation run's candidate and split
    (the images' own titles repeat, "<project>: candidates on test")."""
    plots = []
    for artifact in store.project_artifacts(PLOT, limit):
        config = (store.get_run(artifact["run_id"]) or {}).get("config") or {}
        candidate, split = config.get("candidate"), config.get("split")
        title = (f"evaluation of {candidate}" + (f" on {split}" if split else "")) if candidate else None
        plots.append(
            {
                "id": artifact["id"],
                "run_id": artifact["run_id"],
                "url": f"/ui/api/artifacts/{artifact['id']}",
                "candidate": candidate,
                "split": split,
                "title": title,
            }
        )
    return plots


@router.get(
    "/ui/api/artifacts/{artifact_id}",
    response_model=None,
    responses={
        **error_docs(400, 401, 403, 404, 413, 429, 500),
        200: {"content": {"image/png": {}}, "description": "the plot (PNG)"},
    },
)
async def artifact(request: Request, artifact_id: int = PathParam(..., ge=1, le=2**62)):
    """A report plot by id (the key is checked by Gate, like every data call of the UI).
    Only files the store recorded as report plots are served: no path comes from the request, and a
    recorded path (symlinks resolved) must lie in the store's artifacts folder, where ``add_artifact``
    copies every file, so a tampered row or a link planted there serves nothing else."""
    store = Gateway.of(request).project.store
    row = store.project_artifact(artifact_id, PLOT)
    path = Path(row["path"]).resolve() if row is not None else None
    if path is None or not path.is_file() or not path.is_relative_to(store.artifacts_root.resolve()):
        raise APIError(404, f"no plot with id {artifact_id}", code="not_found")
    return FileResponse(path, media_type="image/png")


@router.get("/ui/api/pairs/next", responses={**KEYED_ERRORS, **ok_doc(PairOut, "the next pending pair")})
async def next_pair(request: Request, after: int = Query(0, ge=0, le=2**62)):
    from odyssey.store import deploy as sd

    store = Gateway.of(request).project.store
    pair = sd.next_pair(store, after)
    return {"pair": pair, "pending": sd.pending_pairs(store)}


class SafeStatic(StaticFiles):
    """Starlette's StaticFiles, which already resolves symlinks (``follow_symlink=False``) and
    refuses any resolved path outside its folder, plus: a path with a NUL byte, a backslash or a
    '..' segment (after URL decoding) is a 404 before the file system is touched."""

    def lookup_path(self, path: str):
        parts = path.replace("\\", "/").split("/")
        if "\x00" in path or "\\" in path or ".." in parts:
            return "", None
        return super().lookup_path(path)
