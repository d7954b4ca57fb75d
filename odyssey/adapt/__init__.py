"""Adapt: prompt engineering and in-context learning (``prompt_search``); fine-tuning (``finetune``,
``merge``: full, LoRA, prompt tuning).

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "prompt_search": "odyssey.adapt.prompting",
    "PromptResult": "odyssey.adapt.prompting",
    "finetune": "odyssey.adapt.finetune_stage",
    "merge": "odyssey.adapt.finetune_stage",
    "FinetuneResult": "odyssey.adapt.finetune_stage",
    "MergeResult": "odyssey.adapt.finetune_stage",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
