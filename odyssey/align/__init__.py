"""Align: preference data, a reward model, RLHF with PPO and a KL penalty, DPO, KTO, ORPO and SimPO on the
one training loop (and TRL's RLOO/GRPO), harmlessness (offensiveness score, detox run), the
aligned-vs-parent evaluation and the methods ranked against DPO.

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
    "train_kto": "odyssey.align.dpo",
    "train_orpo": "odyssey.align.dpo",
    "train_simpo": "odyssey.align.dpo",
    "train_preference": "odyssey.align.dpo",
    "rank_methods": "odyssey.align.evaluation",
    "trl_online": "odyssey.align.dpo",
    "evaluate_aligned": "odyssey.align.evaluation",
    "detox_report": "odyssey.align.evaluation",
    "offensiveness": "odyssey.align.toxicity",
    "starting_candidate": "odyssey.align.common",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
