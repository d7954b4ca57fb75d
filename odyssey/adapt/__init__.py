"""Adapt: prompt engineering and in-context learning (``prompt_search``); fine-tuning comes next."""

from odyssey.adapt.prompting import PromptResult, prompt_search

__all__ = ["PromptResult", "prompt_search"]
