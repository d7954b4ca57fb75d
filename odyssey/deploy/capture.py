"""Durable capture of every request, response and feedback item.

One writer thread owns its own store connection and commits whatever has queued up in one
transaction (group commit): under load, 32 finished requests cost one fsync-free WAL commit
instead of 32 separate ones. A handler awaits its row's commit before the response ends (the
last SSE event of a stream is sent only after its record is committed), so an answer a client
has received is never missing from the store. On shutdown the queue is drained before the
thread exits; uvicorn waits for in-flight requests first, so SIGTERM under load loses nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from pathlib import Path

_STOP = object()


class CaptureWriter:
    def __init__(self, state_dir: Path, project_name: str, project_root: Path, max_batch: int = 256):
        self.state_dir, self.project_name, self.project_root = Path(state_dir), project_name, project_root
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.batches = 0
        self.error: BaseException | None = None

    def start(self):
        ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._loop, args=(ready,), name="odyssey-capture", daemon=True)
        self._thread.start()
        ready.result(timeout=60)

    def submit(self, *, request: dict | None = None, feedback: dict | None = None) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((request, feedback, fut))
        return fut

    async def write(self, *, request: dict | None = None, feedback: dict | None = None):
        """Queue a record and wait until it is committed; returns the feedback row id (if any)."""
        return await asyncio.wrap_future(self.submit(request=request, feedback=feedback))

    def close(self, timeout: float = 60):
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _loop(self, ready: concurrent.futures.Future):
        from odyssey.store import Store, deploy as sd

        try:
            store = Store.open(self.state_dir)
            store.ensure_project(self.project_name, self.project_root)
        except BaseException as exc:  # report to start(), which raises in the server's startup
            ready.set_exception(exc)
            return
        ready.set_result(True)
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(i is _STOP for i in items):
                stopping = True
                items = [i for i in items if i is not _STOP]
                while True:  # drain everything queued before the stop
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        items.append(item)
            if not items:
                continue
            requests = [r for r, _, _ in items if r is not None]
            feedback = [f for _, f, _ in items if f is not None]
            try:
                ids = sd.write_batch(store, requests, feedback)
            except BaseException as exc:
                self.error = exc
                for _, _, fut in items:
                    fut.set_exception(exc)
                continue
            self.written += len(requests) + len(feedback)
            self.batches += 1
            it = iter(ids)
            for _, f, fut in items:
                fut.set_result(next(it) if f is not None else None)
        store.close()
