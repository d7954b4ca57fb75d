"""The vllm engine: vLLM's offline ``LLM`` class on a CUDA machine, LoRA candidates as
``LoRARequest``s on their base model (vLLM batches them with paged attention; no server).

Needs ``pip install vllm`` and a CUDA GPU; ``odyssey.engines.open_engine`` says so before any work
starts. Its tests skip without both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from odyssey import ui
from odyssey.engines.base import EngineInfo, Generated, cut_at_stop, encode_prompt, stop_strings
from odyssey.errors import MissingDependency


def check_available() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise MissingDependency("the vllm engine needs the vllm package", hint="pip install vllm (on a CUDA machine)")
    import torch

    if not torch.cuda.is_available():
        raise MissingDependency(
            "the vllm engine needs a CUDA GPU, and this machine has none",
            hint="use --engine llamacpp (CPU) or transformers",
        )


class VLLMEngine:
    name = "vllm"

    def __init__(
        self, ref: str, folder: Path, tokenizer, family: str, context_length: int, *, info: EngineInfo | None = None
    ):
        check_available()
        from vllm import LLM

        self.ref, self.tokenizer, self.family, self.context_length = ref, tokenizer, family, context_length
        self.lora = None
        adapter = Path(folder) / "adapter_config.json"
        model_path = str(folder)
        if adapter.exists() and not (Path(folder) / "config.json").exists():
            from vllm.lora.request import LoRARequest

            from odyssey.models.loading import ADAPTER_META, resolve

            base_ref = json.loads((Path(folder) / ADAPTER_META).read_text())["base"]
            model_path = str(resolve(base_ref))
            self.lora = LoRARequest(Path(folder).name, 1, str(folder))
        self.llm = LLM(model=model_path, enable_lora=self.lora is not None, max_model_len=context_length, seed=0)
        self.info = info or EngineInfo("vllm", "asked for")

    @property
    def n_params(self) -> int | None:
        return None

    def generate(
        self, prompts: list[str], settings: dict, *, batch_size: int | None = None, description: str = "generating"
    ) -> tuple[list[Generated], dict]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sample = bool(settings.get("do_sample"))
        params = SamplingParams(
            max_tokens=int(settings.get("max_new_tokens", 64)),
            seed=int(settings.get("seed", 0)),
            temperature=float(settings.get("temperature", 1.0)) if sample else 0.0,
            top_p=float(settings.get("top_p", 1.0)) if sample else 1.0,
            stop=stop_strings(settings) or None,
        )
        ids = [TokensPrompt(prompt_token_ids=encode_prompt(self.tokenizer, self.family, p)) for p in prompts]
        start = time.perf_counter()
        with ui.status(f"{description} ({len(prompts)} prompts, vLLM)"):
            outputs = self.llm.generate(ids, params, lora_request=self.lora, use_tqdm=False)
        wall = time.perf_counter() - start
        results = []
        for prompt_ids, out in zip(ids, outputs):
            choice = out.outputs[0]
            text, _ = cut_at_stop(choice.text, stop_strings(settings))
            results.append(
                Generated(
                    text.strip(),
                    wall * 1000,
                    len(prompt_ids["prompt_token_ids"]),
                    len(choice.token_ids),
                    "length" if choice.finish_reason == "length" else "stop",
                )
            )
        stats = {
            "wall_s": wall,
            "new_tokens": sum(g.new_tokens for g in results),
            "examples": len(prompts),
            "engine": self.name,
            "peak_rss_gb": 0.0,
        }
        return results, stats

    def close(self) -> None:
        del self.llm

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
