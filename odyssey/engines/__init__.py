"""Generation behind one interface: every stage that generates asks an engine.

    with open_engine(ref, root=project.root, evaluate=project.spec.evaluate) as engine:
        answers, stats = engine.generate(prompts, settings)

Engines (``evaluate.engine`` in odyssey.yaml, ``--engine`` on the command line, or the
``ODYSSEY_ENGINE`` environment variable, in that order of precedence: flag, environment, spec):

* ``transformers`` (:mod:`odyssey.engines.transformers`): the reference; runs every candidate.
* ``llamacpp`` (:mod:`odyssey.engines.llamacpp`): the candidate converted to GGUF once (f32 by
  default, so greedy answers match the reference), served by a managed llama-server with slots.
* ``vllm`` (:mod:`odyssey.engines.vllm_offline`): vLLM's offline ``LLM`` on CUDA, LoRA as requests.
* ``openai`` (:mod:`odyssey.engines.openai_compat`): any OpenAI-compatible endpoint.
* ``auto``: the fastest engine that runs the candidate exactly: vllm on a CUDA machine with vllm
  installed, else llamacpp where llama-server is built and the candidate converts, else
  transformers. It says which one it picked and why, on the console and in the run's settings.

Every choice is checked before any work starts: an unknown engine, vllm without CUDA, a soft
prompt on llamacpp or an unreachable endpoint is a clear error (or, under ``auto``, a stated
fallback).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from odyssey.engines.base import ENGINE_NAMES, Engine, EngineInfo, Generated, sample_n
from odyssey.errors import OdysseyError

__all__ = ["ENGINE_NAMES", "Engine", "EngineInfo", "Generated", "open_engine", "requested_engine", "sample_n"]


def requested_engine(engine: str | None = None, evaluate=None) -> str:
    """The engine asked for: the flag, else ``ODYSSEY_ENGINE``, else ``evaluate.engine``, else auto."""
    name = engine or os.environ.get("ODYSSEY_ENGINE") or (evaluate.engine if evaluate is not None else None) or "auto"
    if name not in ENGINE_NAMES:
        close = difflib.get_close_matches(name, ENGINE_NAMES, n=1)
        raise OdysseyError(
            f"unknown engine {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            hint=f"evaluate.engine / --engine is one of: {', '.join(ENGINE_NAMES)}",
        )
    return name


def _folder_and_config(ref: str, root: Path | None):
    """(checkpoint folder or None for a bare GGUF, its config, the tokenizer) without loading weights."""
    from transformers import AutoConfig, AutoTokenizer

    from odyssey.engines.gguf import _own_gguf
    from odyssey.models.checkpoint import adapter_kind
    from odyssey.models.loading import ADAPTER_META, resolve

    own = _own_gguf(ref, root)
    if own is not None:
        tok = AutoTokenizer.from_pretrained(own.parent, gguf_file=own.name)
        return None, AutoConfig.from_pretrained(own.parent, gguf_file=own.name), _padded(tok)
    folder = resolve(ref, root)
    config_dir = folder
    if adapter_kind(folder):
        import json

        config_dir = resolve(json.loads((folder / ADAPTER_META).read_text())["base"], root)
    tok_dir = folder if (folder / "tokenizer_config.json").exists() else config_dir
    return folder, AutoConfig.from_pretrained(config_dir), _padded(AutoTokenizer.from_pretrained(tok_dir))


def _padded(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _say(info: EngineInfo, quiet: bool) -> None:
    if not quiet:
        from odyssey import ui

        ui.say(f"engine: {info.name} ({info.reason})")


def open_engine(
    ref: str,
    *,
    root: Path | None = None,
    evaluate=None,
    engine: str | None = None,
    loaded=None,
    dtype: str = "auto",
    batch_size: int = 8,
    model_name: str | None = None,
    quiet: bool = False,
    log_dir: Path | None = None,
) -> Engine:
    """The engine for one candidate reference, started and ready (use it as a context manager).

    ``loaded``: an already loaded model, reused by the transformers engine (no second load).
    """
    name = requested_engine(engine, evaluate)
    if name == "auto":
        return _auto(ref, root, evaluate, loaded, dtype, batch_size, quiet, log_dir)
    if name == "transformers":
        return _transformers(ref, root, loaded, dtype, batch_size, EngineInfo("transformers", "asked for"), quiet)
    if name == "llamacpp":
        return _llamacpp(ref, root, evaluate, EngineInfo("llamacpp", "asked for"), quiet, log_dir)
    if name == "vllm":
        from odyssey.engines.vllm_offline import VLLMEngine, check_available

        check_available()
        folder, config, tok = _folder_and_config(ref, root)
        return _announce(
            VLLMEngine(ref, folder, tok, _family(config), _context(config, tok), info=EngineInfo("vllm", "asked for")),
            quiet,
        )
    return _openai(ref, root, evaluate, model_name, quiet)


def _announce(engine, quiet: bool):
    _say(engine.info, quiet)
    return engine


def _family(config) -> str:
    from odyssey.models.loading import family_of

    return family_of(config)


def _context(config, tokenizer) -> int:
    from odyssey.models.loading import context_length

    return context_length(config, tokenizer)


def _transformers(ref, root, loaded, dtype, batch_size, info: EngineInfo, quiet: bool):
    from odyssey import ui
    from odyssey.engines.transformers import TransformersEngine
    from odyssey.models import load

    _say(info, quiet)
    if loaded is None:
        with ui.status(f"loading {ref}") as update:
            loaded = load(ref, root=root, dtype=dtype, progress=update)
    return TransformersEngine(loaded, info, batch_size)


def _llamacpp(ref, root, evaluate, info: EngineInfo, quiet: bool, log_dir: Path | None):
    from odyssey import ui
    from odyssey.engines.gguf import gguf_for
    from odyssey.engines.llamacpp import LlamaCppEngine, server_binary
    from odyssey.spec import LlamaCppEngineSpec

    settings = evaluate.llamacpp if evaluate is not None else LlamaCppEngineSpec()
    server_binary()  # missing binary: a clear error before any conversion
    folder, config, tok = _folder_and_config(ref, root)
    if _family(config) != "decoder-only":
        from odyssey.engines.gguf import CannotRun

        raise CannotRun(
            f"{ref} is {_family(config)}: the llama.cpp engine runs decoder-only models here",
            hint="use --engine transformers",
        )
    gguf, how = gguf_for(ref, root, settings.precision)
    info.details.update(gguf=str(gguf), how=how, slots=settings.slots)
    context = min(settings.slot_context, _context(config, tok))
    _say(info, quiet)
    with ui.status(f"starting llama-server ({settings.slots} slots) on {gguf.name}"):
        return LlamaCppEngine(
            ref,
            gguf,
            tok,
            _family(config),
            slots=settings.slots,
            slot_context=context,
            threads=settings.threads,
            info=info,
            log_path=(log_dir / "llama-server.log") if log_dir else None,
        )


def _openai(ref, root, evaluate, model_name, quiet: bool):
    from odyssey.engines.openai_compat import OpenAIEngine

    spec = evaluate.openai if evaluate is not None else None
    if spec is None or not spec.base_url:
        raise OdysseyError(
            "the openai engine needs an endpoint, and evaluate.openai.base_url is not set",
            hint="set evaluate.openai.base_url in odyssey.yaml (e.g. http://127.0.0.1:8000/v1) and "
            "the key in the environment variable named by evaluate.openai.api_key_env",
        )
    _, config, tok = _folder_and_config(ref, root)
    info = EngineInfo("openai", f"endpoint {spec.base_url}")
    return _announce(
        OpenAIEngine(
            ref,
            tok,
            _family(config),
            _context(config, tok),
            base_url=spec.base_url,
            model=spec.model or model_name or ref,
            api_key_env=spec.api_key_env,
            concurrency=spec.concurrency,
            timeout_s=spec.timeout_s,
            info=info,
        ),
        quiet,
    )


def _auto(ref, root, evaluate, loaded, dtype, batch_size, quiet, log_dir):
    """vllm on CUDA, else llamacpp, else transformers; each fallback says why."""
    from odyssey.errors import MissingDependency

    reasons = []
    try:
        from odyssey.engines.vllm_offline import check_available

        check_available()
        from odyssey.engines.vllm_offline import VLLMEngine

        folder, config, tok = _folder_and_config(ref, root)
        return _announce(
            VLLMEngine(
                ref,
                folder,
                tok,
                _family(config),
                _context(config, tok),
                info=EngineInfo("vllm", "auto: a CUDA GPU with vLLM"),
            ),
            quiet,
        )
    except MissingDependency:
        pass  # the common case on a CPU: no need to mention vLLM
    except OdysseyError as exc:
        reasons.append(f"vllm: {exc.message}")
    try:
        return _llamacpp(
            ref, root, evaluate, EngineInfo("llamacpp", "auto: the fastest exact engine on a CPU"), quiet, log_dir
        )
    except OdysseyError as exc:
        reasons.append(exc.message.splitlines()[0])
    info = EngineInfo("transformers", "auto: " + "; ".join(reasons))
    return _transformers(ref, root, loaded, dtype, batch_size, info, quiet)
