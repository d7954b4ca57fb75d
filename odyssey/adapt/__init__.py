"""Adapt: prompt engineering and in-context learning (``prompt_search``); fine-tuning (``finetune``,
``merge``: full, LoRA, prompt tuning).

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

_EXPORTS = {
    "prompt_search": "odyssey.adapt.prompting",
    "PromptResult": "odyssey.adapt.prompting",
    "finetune": "odyssey.adapt.finetune_stage",
    "merge": "odyssey.adapt.finetune_stage",
    "FinetuneResult": "odyssey.adapt.finetune_stage",
    "MergeResult": "odyssey.adapt.finetune_stage",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
