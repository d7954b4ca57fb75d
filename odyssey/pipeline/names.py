"""The names ``odyssey run`` knows: stages a pipeline step may name, and the built-in profiles.

Standard library only: :mod:`odyssey.spec` checks ``pipeline[].stage`` against :data:`STAGE_NAMES` while
it validates a spec, so this module must import nothing heavy. What each stage runs is in
:mod:`odyssey.pipeline.stages` (the one mapping table).
"""

from __future__ import annotations

import difflib

# Composite stages expand into the sub-stages after the arrow when the plan is made (see stages.py):
# align -> preferences, [reward], dpo | kto | orpo | simpo | ppo (align.method); optimize -> quantize (one step per optimize.quantize.to), ...
STAGE_NAMES = (
    "scope",
    "prompt",
    "finetune",
    "align",
    "preferences",
    "reward",
    "dpo",
    "kto",
    "orpo",
    "simpo",
    "ppo",
    "optimize",
    "quantize",
    "distill",
    "prune",
    "evaluate",
)

DEFAULT_PIPELINE = ("scope", "prompt", "finetune", "align", "optimize", "evaluate")

# --profile NAME: spec overrides, deep-merged over odyssey.yaml (a spec's own ``profiles:`` adds to these
# or replaces one by name). Sizes only: steps, rows, limits; never what is trained or how it is scored.
# align.dpo/kto/orpo/simpo/reward keep their max_length (768): a pair whose prompt alone fills it is dropped.
PROFILES: dict[str, dict] = {
    # odyssey demo: under 10 minutes on two CPU cores with the packaged 135M model. 22 LoRA steps (about
    # 5 epochs of the 36 shipped training dialogues) are what turn its copying into summaries.
    "demo": {
        "prompt": {"shots": [0, 1], "selection": ["fixed"], "limit": 6, "test_limit": 12},
        "adapt": {"max_steps": 22, "save_every": 11, "val_limit": 6, "eval_splits": ["test"], "max_seq_len": 384},
        "align": {
            "pairs": 12,
            "eval_limit": 6,
            "preferences": [{"kind": "reference"}],
            "dpo": {"epochs": 1, "batch_size": 4},
            "kto": {"epochs": 1, "batch_size": 4},
            "orpo": {"epochs": 1, "batch_size": 4},
            "simpo": {"epochs": 1, "batch_size": 4},
            "reward": {"epochs": 1, "batch_size": 4},
            "ppo": {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 24},
        },
        "optimize": {
            "quantize": {"to": ["int8"]},
            "measure": {"limit": 6, "paired_rounds": 1, "speed_prompt_tokens": 64, "speed_new_tokens": 8},
        },
        "evaluate": {"limit": 12},
    },
    # A smoke test: each stage does the least that still exercises it.
    "quick": {
        "prompt": {"shots": [0], "selection": ["fixed"], "limit": 2, "test_limit": 2},
        "adapt": {"max_steps": 2, "save_every": 1, "val_limit": 2, "eval_splits": ["test"], "max_seq_len": 256},
        "align": {
            "pairs": 4,
            "eval_limit": 2,
            "preferences": [{"kind": "reference"}],
            "dpo": {"epochs": 1, "batch_size": 2},
            "kto": {"epochs": 1, "batch_size": 2},
            "orpo": {"epochs": 1, "batch_size": 2},
            "simpo": {"epochs": 1, "batch_size": 2},
            "reward": {"epochs": 1, "batch_size": 2},
            "ppo": {"steps": 1, "batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 8},
        },
        "optimize": {
            "quantize": {"to": ["int8"]},
            "measure": {
                "limit": 2,
                "paired_rounds": 0,
                "speed_prompt_tokens": 16,
                "speed_new_tokens": 4,
                "speed_batch": 2,
                "isolate": False,
            },
            "distill": {"steps": 2, "batch_size": 2, "max_length": 128},
            "prune": {"calibration_examples": 4, "max_length": 128},
        },
        "evaluate": {"limit": 2},
    },
    # The full-size run of issue 22: 2 epochs with early stopping, 300 preference prompts, 16 PPO prompts a step.
    "full": {
        "prompt": {"limit": 50, "test_limit": None},
        "adapt": {"epochs": 2, "max_steps": None, "eval_every": 25, "early_stopping_patience": 2, "val_limit": 50},
        "align": {"pairs": 300, "eval_limit": None, "ppo": {"batch_size": 16}},
        "optimize": {
            "quantize": {"to": ["int8", "gguf:q8_0", "gguf:q4_k_m"]},
            "prune": {"sparsity": 0.25},
            "measure": {"limit": None},
        },
        "evaluate": {"limit": None},
    },
}


def close_match(word: str, choices) -> str | None:
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return found[0] if found else None


def check_stage_name(name: str) -> str:
    """``name`` if it is a stage; else a ValueError with a did-you-mean (the spec loader adds file:line)."""
    if name in STAGE_NAMES:
        return name
    close = close_match(name, STAGE_NAMES)
    raise ValueError(
        f"unknown stage {name!r}"
        + (f"; did you mean {close!r}?" if close else "")
        + f" (stages: {', '.join(STAGE_NAMES)})"
    )
