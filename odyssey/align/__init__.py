"""Align: preference data, a reward model, RLHF with PPO and a KL penalty, DPO (and TRL's RLOO/GRPO),
harmlessness (offensiveness score, detox run) and the aligned-vs-parent evaluation.

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "build_preferences": "odyssey.align.preferences",
    "load_preference_set": "odyssey.align.preferences",
    "queue_for_labelling": "odyssey.align.preferences",
    "train_reward_model": "odyssey.align.reward",
    "RewardModel": "odyssey.align.reward",
    "train_ppo": "odyssey.align.ppo",
    "train_dpo": "odyssey.align.dpo",
    "trl_online": "odyssey.align.dpo",
    "evaluate_aligned": "odyssey.align.evaluation",
    "detox_report": "odyssey.align.evaluation",
    "offensiveness": "odyssey.align.toxicity",
    "starting_candidate": "odyssey.align.common",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
