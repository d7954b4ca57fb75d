"""Backends: the one interface the gateway talks to, whatever runs the model.

    backend.tokenizer            a Hugging Face tokenizer (prompt rendering and token counts)
    await backend.start() / stop()
    backend.stream(ids, params)  async iterator of Delta (text pieces, then one with finish_reason)

* :class:`TransformersBackend` (CPU/GPU, any checkpoint ``odyssey.models.load`` reads). A worker
  thread batches concurrent requests: whatever is waiting when a batch starts is decoded together
  (dynamic batching, up to ``parallel`` rows), each row streams its own tokens and stops on its own
  EOS or ``max_tokens`` (per-row stopping criteria). Requests arriving mid-batch wait for the next
  batch: true continuous batching is what the llama.cpp path gives.
* :class:`LlamaServerBackend` (GGUF on CPU, the fast path here). llama.cpp's C++ ``llama-server``
  runs as a managed child process with ``-np N`` parallel slots and continuous batching; the
  gateway forwards token ids to its OpenAI-compatible ``/v1/completions``. This is Ollama's design:
  llama.cpp's scheduler batches across slots far better than anything we could write in Python
  (the issue measured llama-cpp-python's own server, which serializes requests, at 13.3 tok/s
  aggregate at concurrency 8 against llama-server's 36.2), while the gateway adds what
  llama-server lacks: hashed scoped keys, per-key limits, durable capture, feedback, the UI.
  Sending token ids (rendered with the candidate's tokenizer and prompt) means the served
  prompt is byte-for-byte the evaluated one.
* :class:`VLLMBackend`: the same upstream protocol against ``vllm serve`` on a GPU machine
  (optional; needs ``pip install vllm``).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from odyssey.errors import MissingDependency, OdysseyError, Unavailable


@dataclass
class GenParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        # below 1e-5 (vLLM's epsilon) sampling is greedy anyway, and a denormal such as 2e-311
        # would turn logits / temperature into inf and the probabilities into NaN (a fuzzer found it)
        return self.temperature < 1e-5


@dataclass
class Delta:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return [i for i in ids if isinstance(i, int) and i >= 0]


class Backend:
    kind = "base"
    tokenizer = None
    context_length: int = 2048
    add_special_tokens: bool = True

    async def start(self):  # pragma: no cover - interface
        pass

    async def stop(self):  # pragma: no cover - interface
        pass

    def stream(self, ids: list[int], params: GenParams) -> AsyncIterator[Delta]:  # pragma: no cover
        raise NotImplementedError

    def info(self) -> dict:
        return {"backend": self.kind}


# ---- transformers -----------------------------------------------------------------------------


@dataclass
class _Job:
    ids: list[int]
    params: GenParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    new: list[int] = field(default_factory=list)
    sent: str = ""
    done: bool = False
    cancelled: bool = False

    def emit(self, delta: Delta):
        self.loop.call_soon_threadsafe(self.out.put_nowait, delta)

    def finish(self, reason: str):
        if not self.done:
            self.done = True
            self.emit(Delta("", reason, len(self.ids), len(self.new)))


class TransformersBackend(Backend):
    kind = "transformers"

    def __init__(self, ref: str, root: Path | None = None, parallel: int = 8, dtype: str = "auto"):
        self.ref, self.root, self.parallel, self.dtype = ref, root, parallel, dtype
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.loaded = None
        self.batches = 0
        self.max_batch_seen = 0

    def load(self):
        from odyssey.models import FAMILY_DECODER, load
        from odyssey.prompts import has_chat_template

        self.loaded = load(self.ref, root=self.root, dtype=self.dtype)
        if self.loaded.family != FAMILY_DECODER:
            raise OdysseyError(
                f"{self.ref} is {self.loaded.family}; the server serves decoder-only models",
                hint="serve a causal language model candidate",
            )
        self.tokenizer = self.loaded.tokenizer
        self.tokenizer.padding_side = "left"
        self.context_length = self.loaded.context_length
        self.add_special_tokens = not has_chat_template(self.tokenizer)
        self._stop = set(stop_ids(self.tokenizer))

    async def start(self):
        if self.loaded is None:
            await asyncio.to_thread(self.load)
        self._thread = threading.Thread(target=self._worker, name="odyssey-generate", daemon=True)
        self._thread.start()

    async def stop(self):
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 30)

    def info(self) -> dict:
        return {
            "backend": self.kind,
            "model": self.ref,
            "parallel": self.parallel,
            "batches": self.batches,
            "max_batch_seen": self.max_batch_seen,
        }

    async def stream(self, ids: list[int], params: GenParams) -> AsyncIterator[Delta]:
        job = _Job(list(ids), params, asyncio.get_running_loop(), asyncio.Queue())
        self._jobs.put(job)
        try:
            while True:
                delta = await job.out.get()
                yield delta
                if delta.finish_reason:
                    return
        finally:
            job.cancelled = True  # a client that went away frees its row at the next step

    def _worker(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            deadline = time.perf_counter() + 0.005  # a few ms to let simultaneous requests join
            while len(batch) < self.parallel:
                try:
                    nxt = self._jobs.get(timeout=max(deadline - time.perf_counter(), 0))
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)
                    break
                batch.append(nxt)
            # Rows in one generate() share sampling settings: group by them.
            groups: dict[tuple, list[_Job]] = {}
            for j in batch:
                groups.setdefault((j.params.greedy, j.params.temperature, j.params.top_p, j.params.seed), []).append(j)
            for group in groups.values():
                try:
                    self._run(group)
                except Exception as exc:  # a failed batch fails its requests, not the server
                    for j in group:
                        if not j.done:
                            j.done = True
                            j.emit(Delta("", "error:" + f"{type(exc).__name__}: {exc}"[:300]))

    def _run(self, jobs: list[_Job]):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from odyssey.engines.transformers import generation_kwargs

        tok, model = self.tokenizer, self.loaded.model
        self.batches += 1
        self.max_batch_seen = max(self.max_batch_seen, len(jobs))
        width = max(len(j.ids) for j in jobs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(j.ids)) + j.ids for j in jobs])
        mask = torch.tensor([[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in jobs])
        stop = self._stop
        p = jobs[0].params

        class Streamer(StoppingCriteria):
            """Called after every decoding step: streams each row's new token, stops rows one by one."""

            def __call__(self, seq, scores, **kwargs):
                last = seq[:, -1].tolist()
                done = torch.zeros(len(jobs), dtype=torch.bool, device=seq.device)
                for row, j in enumerate(jobs):
                    if j.done or j.cancelled:
                        j.done = True
                        done[row] = True
                        continue
                    if last[row] in stop:
                        j.finish("stop")
                        done[row] = True
                        continue
                    j.new.append(last[row])
                    text = tok.decode(j.new, skip_special_tokens=True)
                    if not text.endswith("\ufffd"):  # hold back half a multi-byte character
                        piece, j.sent = text[len(j.sent) :], text
                        if piece:
                            j.emit(Delta(piece))
                    if len(j.new) >= j.params.max_tokens:
                        j.finish("length")
                        done[row] = True
                return done

        settings = {
            "max_new_tokens": max(j.params.max_tokens for j in jobs),
            "do_sample": not p.greedy,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": 0,
        }
        kwargs = generation_kwargs(settings, tok)
        kwargs.pop("eos_token_id", None)  # stopping is per row, in Streamer
        if p.seed is not None:
            torch.manual_seed(p.seed)
        with torch.inference_mode():
            model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=mask.to(model.device),
                stopping_criteria=StoppingCriteriaList([Streamer()]),
                **kwargs,
            )
        for j in jobs:
            j.finish("length")


# ---- upstream servers (llama-server, vLLM) ------------------------------------------------------


def llama_server_path(build: bool = False) -> Path | None:
    """The llama-server binary: $ODYSSEY_LLAMA_SERVER, Odyssey's build (odyssey.models.llamacpp), or PATH.

    ``build=True`` builds it from llama-cpp-python's sources when missing (minutes, once); 'auto'
    never does that behind a user's back, it falls back to transformers instead.
    """
    env = os.environ.get("ODYSSEY_LLAMA_SERVER")
    if env:
        return Path(env) if Path(env).exists() else None
    try:
        from odyssey.models import llamacpp  # built from llama-cpp-python's vendored llama.cpp sources

        path = llamacpp.tool_path("llama-server", build=build)
        if path and Path(path).exists():
            return Path(path)
    except ImportError:
        pass
    except OdysseyError:
        if build:
            raise
    found = shutil.which("llama-server")
    return Path(found) if found else None


def gguf_for(ref: str, root: Path | None = None) -> Path | None:
    """The GGUF file behind a model reference, if it has one."""
    from odyssey.models import PACKAGED, parse_ref

    parsed = parse_ref(ref, root)
    if parsed.kind == "packaged" and PACKAGED[parsed.value].kind != "embedding":
        return PACKAGED[parsed.value].weights_file()
    if parsed.kind == "gguf":
        return Path(parsed.value)
    if parsed.kind == "local":
        found = sorted(Path(parsed.value).glob("*.gguf"))
        return found[0] if found else None
    return None


def tokenizer_for(ref: str, root: Path | None, gguf: Path | None):
    """The HF tokenizer of a model: from its checkpoint folder, or read from the GGUF itself."""
    from transformers import AutoTokenizer

    from odyssey.models import parse_ref
    from odyssey.paths import model_cache

    parsed = parse_ref(ref, root)
    folder = None
    if parsed.kind == "packaged":
        folder = model_cache() / f"packaged-{parsed.value}"
    elif parsed.kind == "local" and (Path(parsed.value) / "tokenizer_config.json").exists():
        folder = Path(parsed.value)
    if folder is not None and (folder / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(folder)
    if gguf is not None:
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    from odyssey.models import resolve

    return AutoTokenizer.from_pretrained(resolve(ref, root))


class UpstreamBackend(Backend):
    """A child server speaking OpenAI's /v1/completions with token-id prompts.

    The child is an :class:`odyssey.engines.process.ManagedServer`: it binds 127.0.0.1 on a free
    port, needs a random API key of its own (sent upstream as ``Authorization: Bearer``; it never
    leaves this process), and dies with its parent (parent-death signal), so neither a local
    process nor a ``kill -9`` of ``odyssey serve`` gets around the gateway or leaves an orphan.
    """

    kind = "upstream"

    def __init__(self, ref: str, root: Path | None, log_path: Path | None = None):
        from odyssey.engines.process import ManagedServer

        self.ref, self.root, self.log_path = ref, root, log_path
        self.server = ManagedServer(lambda port, key: self.command(), log_path=log_path, name=self.kind)
        self.port = self.server.port
        self.client = None
        self.model_name = "model"

    @property
    def api_key(self) -> str:
        return self.server.api_key

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.server.proc

    def command(self) -> list[str]:  # pragma: no cover - per subclass; uses self.port and self.api_key
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self.server.base_url

    async def start(self, timeout: float = 300):
        import httpx

        if self.tokenizer is None:
            self.tokenizer = await asyncio.to_thread(self._tokenizer)
        # launch() on the event loop's thread, which lives as long as the server: the parent-death
        # signal fires when the *thread* that forked the child ends.
        self.server.launch()
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.server.headers,
            timeout=httpx.Timeout(600, connect=10),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.server.check_alive()  # exited while starting: Unavailable naming its log
            try:
                r = await self.client.get("/health")
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        await self.stop()
        raise Unavailable(f"{self.kind} did not become healthy within {timeout:.0f} s", hint=f"see {self.log_path}")

    def _tokenizer(self):
        return tokenizer_for(self.ref, self.root, getattr(self, "gguf", None))

    async def stop(self):
        if self.client is not None:
            await self.client.aclose()
        await asyncio.to_thread(self.server.stop)

    def info(self) -> dict:
        """The gateway shows ``model``, ``upstream`` and ``pid`` to admin keys only."""
        return {
            "backend": self.kind,
            "model": self.ref,
            "upstream": self.base_url,
            "pid": self.proc.pid if self.proc else None,
        }

    def _body(self, ids: list[int], params: GenParams, stream: bool) -> dict:
        body = {
            "model": self.model_name,
            "prompt": ids,
            "max_tokens": params.max_tokens,
            "stream": stream,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": params.top_p,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        return body

    async def complete(self, ids: list[int], params: GenParams) -> Delta:
        """The whole answer in one upstream response: for non-streaming requests this keeps the
        gateway's CPU use per request constant instead of per token (it shares the cores)."""
        resp = await self.client.post("/v1/completions", json=self._body(ids, params, False))
        if resp.status_code != 200:
            return Delta("", f"error:upstream {resp.status_code}: {resp.text[:300]}")
        data = resp.json()
        choice = (data.get("choices") or [{}])[0]
        usage = data.get("usage") or {}
        return Delta(
            choice.get("text") or "",
            choice.get("finish_reason") or "stop",
            usage.get("prompt_tokens") or len(ids),
            usage.get("completion_tokens"),
        )

    async def stream(self, ids: list[int], params: GenParams) -> AsyncIterator[Delta]:
        body = self._body(ids, params, True)
        n_out, finish, usage = 0, None, None
        async with self.client.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread()).decode(errors="replace")[:300]
                yield Delta("", f"error:upstream {resp.status_code}: {detail}")
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    text = choice.get("text") or ""
                    if text:
                        n_out += 1
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
        prompt_tokens = (usage or {}).get("prompt_tokens") or len(ids)
        completion_tokens = (usage or {}).get("completion_tokens") or n_out
        yield Delta("", finish or "stop", prompt_tokens, completion_tokens)


class LlamaServerBackend(UpstreamBackend):
    kind = "llama.cpp"

    def __init__(
        self,
        ref: str,
        root: Path | None,
        gguf: Path,
        binary: Path,
        parallel: int = 8,
        context_length: int | None = None,
        threads: int | None = None,
        log_path: Path | None = None,
    ):
        super().__init__(ref, root, log_path)
        self.gguf, self.binary, self.parallel = gguf, binary, parallel
        self.threads = threads or os.cpu_count() or 2
        # llama-server splits -c across its slots: give each slot room for a full prompt + answer.
        self.total_context = context_length or 2048 * parallel
        self.context_length = self.total_context // parallel

    def command(self) -> list[str]:
        from odyssey.engines.llamacpp import server_command

        return server_command(
            self.binary,
            self.gguf,
            self.port,
            self.api_key,
            slots=self.parallel,
            context=self.total_context,
            threads=self.threads,
            extra=("--log-disable",),
        )

    def info(self) -> dict:
        return {**super().info(), "parallel": self.parallel, "gguf": str(self.gguf)}


class VLLMBackend(UpstreamBackend):
    kind = "vllm"

    def __init__(self, ref: str, root: Path | None, parallel: int = 256, log_path: Path | None = None):
        super().__init__(ref, root, log_path)
        from odyssey.errors import require

        require("vllm", "vllm", "the vLLM backend")
        from odyssey.models import resolve

        self.path = resolve(ref, root)
        self.model_name = str(self.path)
        self.parallel = parallel

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            f"--api-key={self.api_key}",  # '=': the key may start with '-'
            "--max-num-seqs",
            str(self.parallel),
        ]

    def _tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)


def make_backend(
    kind: str,
    ref: str,
    root: Path | None,
    *,
    parallel: int = 8,
    context_length: int | None = None,
    log_dir: Path | None = None,
) -> Backend:
    """Pick and build the backend for a model reference ('auto': llama.cpp for GGUF when available)."""
    gguf = gguf_for(ref, root) if kind in ("auto", "llama.cpp") else None
    binary = None
    if kind in ("auto", "llama.cpp"):
        binary = llama_server_path(build=kind == "llama.cpp" and gguf is not None)
    if kind == "llama.cpp":
        if gguf is None:
            raise OdysseyError(
                f"the llama.cpp backend needs a GGUF model; {ref} has none",
                hint="quantize it first (odyssey optimize), or use backend: transformers",
            )
        if binary is None:
            raise MissingDependency(
                "the llama.cpp backend needs the llama-server binary, which was not found",
                hint="build it (odyssey.models.llamacpp) or set ODYSSEY_LLAMA_SERVER to its path",
            )
    if kind == "vllm":
        return VLLMBackend(ref, root, log_path=(log_dir / "vllm.log") if log_dir else None)
    if gguf is not None and binary is not None:
        return LlamaServerBackend(
            ref,
            root,
            gguf,
            binary,
            parallel,
            context_length,
            log_path=(log_dir / "llama-server.log") if log_dir else None,
        )
    return TransformersBackend(ref, root, parallel)
