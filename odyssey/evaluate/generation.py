"""Moved to :mod:`odyssey.engines.transformers` (every stage generates through ``odyssey.engines``);
these names stay importable from here for code written against the old path."""

from odyssey.engines.base import Generated
from odyssey.engines.transformers import generate, generation_kwargs, rss_gb

__all__ = ["Generated", "generate", "generation_kwargs", "rss_gb"]
