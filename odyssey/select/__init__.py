"""Select: model catalog and cards, zero-shot selection, the feasibility planner, lm-eval benchmarks,
data curation and pretraining from scratch.

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "select_models": "odyssey.select.ranking",
    "SelectResult": "odyssey.select.ranking",
    "plan": "odyssey.select.planner",
    "probe": "odyssey.select.planner",
    "Plan": "odyssey.select.planner",
    "curate": "odyssey.select.curation",
    "CurationReport": "odyssey.select.curation",
    "run_benchmarks": "odyssey.select.benchmarks",
    "pretrain": "odyssey.select.pretraining",
    "model_cards": "odyssey.select.catalog",
    "hub_search": "odyssey.select.catalog",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
