"""Augment: retrieval-augmented generation (``rag``), chain-of-thought, program-aided LMs with a
sandbox (``pal``), and ReAct agents, scored by the same store and board as model candidates.

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "ingest": "odyssey.augment.api",
    "ask": "odyssey.augment.api",
    "reason": "odyssey.augment.api",
    "search": "odyssey.augment.api",
    "evaluate_augmented": "odyssey.augment.evaluate",
    "AugmentEvalResult": "odyssey.augment.evaluate",
    "Collection": "odyssey.augment.index",
    "Hit": "odyssey.augment.index",
    "Agent": "odyssey.augment.react",
    "Tool": "odyssey.augment.react",
    "tool": "odyssey.augment.react",
    "run_python": "odyssey.augment.sandbox",
    "SandboxLimits": "odyssey.augment.sandbox",
    "ChatModel": "odyssey.augment.llm",
    "solve": "odyssey.augment.reasoning",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
