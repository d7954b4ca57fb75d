"""``odyssey tune``: an Optuna search over the fine-tuning settings (learning rate, LoRA rank and targets,
epochs ...), the scope's primary metric on validation as the objective. It sits above the stages: each
trial is ``odyssey.adapt.finetune`` with the trial's settings, so each is a candidate on the board.

Entry points load lazily: ``odyssey --help`` imports this package to find its command.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "tune": "odyssey.tune.search",
    "TuneResult": "odyssey.tune.search",
    "TrialPruned": "odyssey.tune.search",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
