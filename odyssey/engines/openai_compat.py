"""The openai engine: any OpenAI-compatible endpoint generates (``odyssey serve`` on another
machine, a vLLM cluster, Ollama). This is how an evaluation outgrows one machine.

The harness still renders prompts locally, with the candidate's tokenizer and chat template, and
sends the finished text to ``/v1/completions`` (the raw-completion route: no second template is
applied on the other side). ``evaluate.openai.base_url`` names the endpoint; the key is read from
the environment variable ``evaluate.openai.api_key_env`` and never written to the spec or the store.
"""

from __future__ import annotations

import os
import time

from odyssey.engines.base import EngineInfo, Generated, cut_at_stop, run_requests, stop_strings
from odyssey.errors import OdysseyError, Unavailable, require
from odyssey.urls import check_url


def client(base_url: str, where: str, api_key: str | None, **kwargs):
    """The official ``openai`` client for a configured endpoint (``where`` names its odyssey.yaml field):
    http(s) only, and following no redirect, so the endpoint cannot send the requests and the key on to
    another host (the client follows them by default); a redirect answers as an error instead."""
    openai = require("openai", "deploy", "an OpenAI-compatible endpoint")
    check_url(base_url, where)
    http_client = openai.DefaultHttpxClient(follow_redirects=False)
    return openai.OpenAI(base_url=base_url, api_key=api_key or "none", http_client=http_client, **kwargs)


def check_reachable(base_url: str, api_key: str | None, timeout: float = 10) -> None:
    """Fail before any work starts when the endpoint does not answer ``GET /models`` (redirects not followed)."""
    import httpx

    check_url(base_url, "evaluate.openai.base_url")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"the openai engine's endpoint {base_url} is unreachable: {type(exc).__name__}: {exc}",
            hint="check evaluate.openai.base_url in odyssey.yaml and that the server is running",
        ) from None
    if resp.status_code in (401, 403):
        raise OdysseyError(
            f"{base_url} refused the key ({resp.status_code})",
            hint="set the environment variable named by evaluate.openai.api_key_env to a valid key",
        )
    if resp.status_code >= 300:
        moved = f" (a redirect to {resp.headers.get('location')}, which is not followed)" if resp.is_redirect else ""
        raise Unavailable(
            f"{base_url}/models answered {resp.status_code}{moved}: {resp.text[:200]}",
            hint="check evaluate.openai.base_url (it usually ends in /v1); name the final URL itself",
        )


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        ref: str,
        tokenizer,
        family: str,
        context_length: int,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 600,
        info: EngineInfo | None = None,
    ):
        require("openai", "deploy", "the openai engine")
        api_key = os.environ.get(api_key_env) or None
        check_reachable(base_url, api_key)
        self.ref, self.tokenizer, self.family, self.context_length = ref, tokenizer, family, context_length
        self.model, self.concurrency = model, concurrency
        self.client = client(base_url, "evaluate.openai.base_url", api_key, timeout=timeout_s, max_retries=2)
        self.info = info or EngineInfo("openai", f"endpoint {base_url}")

    @property
    def n_params(self) -> int | None:
        return None

    def _one(self, prompt: str, settings: dict) -> Generated:
        kwargs = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": int(settings.get("max_new_tokens", 64)),
            "seed": int(settings.get("seed", 0)),
        }
        if settings.get("do_sample"):
            kwargs.update(temperature=float(settings.get("temperature", 1.0)), top_p=float(settings.get("top_p", 1.0)))
        else:
            kwargs["temperature"] = 0.0
        if stop_strings(settings):
            kwargs["stop"] = stop_strings(settings)
        t0 = time.perf_counter()
        resp = self.client.completions.create(**kwargs)
        latency = (time.perf_counter() - t0) * 1000
        choice = resp.choices[0]
        text, _ = cut_at_stop(choice.text or "", stop_strings(settings))
        usage = resp.usage
        new = usage.completion_tokens if usage else len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        prompt_tokens = usage.prompt_tokens if usage else 0
        return Generated(text.strip(), latency, prompt_tokens, new, choice.finish_reason or "stop")

    def generate(
        self, prompts: list[str], settings: dict, *, batch_size: int | None = None, description: str = "generating"
    ) -> tuple[list[Generated], dict]:
        answers, new_total, wall = run_requests(
            self._one, prompts, settings, workers=self.concurrency, description=description
        )
        stats = {
            "wall_s": wall,
            "new_tokens": new_total,
            "examples": len(prompts),
            "engine": self.name,
            "peak_rss_gb": 0.0,
            "concurrency": self.concurrency,
        }
        return answers, stats

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
