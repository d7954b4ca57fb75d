"""The llama.cpp engine: the candidate as GGUF behind a managed ``llama-server`` with parallel slots.

Why a server rather than the ``llama_cpp`` binding: the binding decodes one sequence at a time,
while llama-server's slots share every decoding step (continuous batching), which is where a
CPU's memory bandwidth goes furthest (``benchmarks/results/serve_load.json``: 56 tok/s with 8
slots against 20 for llama-cpp-python's own server).

Faithfulness: prompts arrive as the token ids the candidate's Hugging Face tokenizer makes of the
harness's rendered text (llama.cpp never re-tokenizes), sampling is plain (greedy, or temperature/
top-k/top-p with llama.cpp's extra samplers neutralized), and the answer's token ids are decoded
by the same tokenizer the transformers engine uses.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from odyssey.engines.base import EngineInfo, Generated, cut_at_stop, encode_prompt, run_requests, stop_strings
from odyssey.engines.process import ManagedServer
from odyssey.errors import MissingDependency, OdysseyError

# llama-server keeps finished prompts' KV state in RAM for reuse, up to 8 GiB by default (--cache-ram):
# over 10,000 requests odyssey serve + its child grew 626 MB -> 6.5 GB, which reads as a leak on a 4 GB budget.
# 256 MiB still holds many copies of a shared system prompt, which is what the reuse is for.
PROMPT_CACHE_MB = 256


def server_command(
    binary: Path,
    gguf: Path,
    port: int,
    api_key: str,
    *,
    slots: int = 1,
    context: int = 4096,
    threads: int | None = None,
    cache_ram_mb: int = PROMPT_CACHE_MB,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """llama-server's argument list, the one place it is written: loopback only, its own key, ``slots``
    parallel sequences sharing ``context`` tokens (``-c`` is split across the slots), ``threads`` for
    decoding and prompts alike (llama.cpp's default: all cores), a bounded prompt cache, no web UI."""
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key]
    cmd += ["-np", str(slots), "-c", str(context), "--cache-ram", str(cache_ram_mb)]
    if threads:
        cmd += ["-t", str(threads), "-tb", str(threads)]
    return [*cmd, "--cont-batching", "--no-webui", *extra]


def server_binary() -> Path:
    """The llama-server that ``scripts/setup.sh`` built (never built here, in the middle of a command)."""
    env = os.environ.get("ODYSSEY_LLAMA_SERVER")
    if env:
        if Path(env).is_file():
            return Path(env)
        raise MissingDependency(f"ODYSSEY_LLAMA_SERVER={env} is not a file", hint="point it at a llama-server binary")
    from odyssey.models import llamacpp

    try:
        if llamacpp.available("llama-server"):
            return llamacpp.tool_path("llama-server", build=False)
    except OdysseyError:
        pass
    raise MissingDependency(
        "the llama.cpp engine needs llama-server, which is not built on this machine",
        hint="run `odyssey optimize tools` once (a few minutes; scripts/setup.sh does it), "
        "or use --engine transformers",
    )


def _child_peak_rss_gb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError):
        pass
    return 0.0


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(
        self,
        ref: str,
        gguf: Path,
        tokenizer,
        family: str,
        *,
        slots: int = 8,
        slot_context: int = 4096,
        threads: int | None = None,
        info: EngineInfo | None = None,
        n_params: int | None = None,
        log_path: Path | None = None,
    ):
        self.ref, self.gguf, self.tokenizer, self.family = ref, Path(gguf), tokenizer, family
        self.special_ids = set(tokenizer.all_special_ids)  # dropped from every answer before decoding
        self.slots, self.context_length = slots, slot_context
        self.threads = threads or os.cpu_count() or 2
        self.info = info or EngineInfo("llamacpp", "asked for")
        self._n_params = n_params
        self.server = ManagedServer(self._command, log_path=log_path, name="llama-server")
        self.binary = server_binary()
        self.server.start()
        import weakref

        import httpx

        weakref.finalize(self, self.server.stop)  # an engine dropped without close() still stops its child

        self.client = httpx.Client(
            base_url=self.server.base_url,
            headers=self.server.headers,
            timeout=httpx.Timeout(3600, connect=10),
            limits=httpx.Limits(max_connections=slots + 4),
        )

    def _command(self, port: int, api_key: str) -> list[str]:
        return server_command(
            self.binary,
            self.gguf,
            port,
            api_key,
            slots=self.slots,
            context=self.slots * self.context_length,
            threads=self.threads,
        )

    @property
    def n_params(self) -> int | None:
        if self._n_params is None:
            from gguf import GGUFReader

            self._n_params = int(sum(t.n_elements for t in GGUFReader(str(self.gguf)).tensors))
        return self._n_params

    def _body(self, ids: list[int], settings: dict) -> dict:
        body = {
            "prompt": ids,
            "n_predict": int(settings.get("max_new_tokens", 64)),
            "cache_prompt": True,
            "return_tokens": True,
            "stream": False,
            "min_p": 0.0,
            "typical_p": 1.0,
            "seed": int(settings.get("seed", 0)),
        }
        if settings.get("repetition_penalty", 1.0) != 1.0:  # transformers penalizes the whole sequence
            body.update(repeat_penalty=float(settings["repetition_penalty"]), repeat_last_n=self.context_length)
        if settings.get("do_sample"):
            body.update(
                temperature=float(settings.get("temperature", 1.0)),
                top_k=int(settings.get("top_k", 50)),
                top_p=float(settings.get("top_p", 1.0)),
            )
        else:
            body.update(temperature=0.0, top_k=1)
        if stop_strings(settings):
            body["stop"] = stop_strings(settings)
        return body

    def _one(self, ids: list[int], settings: dict) -> Generated:
        t0 = time.perf_counter()
        resp = self.client.post("/completion", json=self._body(ids, settings))
        latency = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            self.server.check_alive()
            raise OdysseyError(
                f"llama-server answered {resp.status_code}: {resp.text[:300]}",
                hint=f"see its log: {self.server.log_path}",
            )
        data = resp.json()
        tokens = [t for t in data.get("tokens") or [] if t not in self.special_ids]
        # The answer's ids decoded by the candidate's own tokenizer, as the transformers engine does;
        # after a stop string, llama.cpp's tokens may end inside it, and its text is the one cut there.
        stopped_on_word = data.get("stop_type") == "word"
        decoded = (
            data.get("content", "") if stopped_on_word else self.tokenizer.decode(tokens, skip_special_tokens=True)
        )
        text, stopped = cut_at_stop(decoded, stop_strings(settings))
        stopped = stopped or stopped_on_word
        finish = "length" if data.get("stop_type") == "limit" and not stopped else "stop"
        return Generated(text.strip(), latency, len(ids), len(tokens), finish, tokens)

    def generate(
        self, prompts: list[str], settings: dict, *, batch_size: int | None = None, description: str = "generating"
    ) -> tuple[list[Generated], dict]:
        encoded = [encode_prompt(self.tokenizer, self.family, p) for p in prompts]
        # Longest first: the long prompts start early instead of leaving one slot busy at the end.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        answers, new_total, wall = run_requests(
            self._one, encoded, settings, workers=self.slots, description=description, order=order
        )
        stats = {
            "wall_s": wall,
            "new_tokens": new_total,
            "examples": len(prompts),
            "engine": self.name,
            "peak_rss_gb": _child_peak_rss_gb(self.server.proc.pid if self.server.proc else None),
            "slots": self.slots,
            "gguf": str(self.gguf),
        }
        return answers, stats

    def close(self) -> None:
        self.client.close()
        self.server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
