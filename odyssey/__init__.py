"""Odyssey: carry an LLM-powered application through the generative-AI project lifecycle."""

import logging as _logging

__version__ = "0.1.0"

# torchao (pulled in by transformers when installed) logs a warning per CUDA-only extension it cannot load
# on a CPU machine, and torch's pytree logs deprecations at import: noise before every command's output.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)


def __getattr__(name):
    # Lazy, so `odyssey --help` does not pay for pydantic and yaml.
    if name == "Project":
        from odyssey.project import Project

        return Project
    raise AttributeError(name)


__all__ = ["Project", "__version__"]
