"""Odyssey: carry an LLM-powered application through the generative-AI project lifecycle."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `odyssey --help` does not pay for pydantic and yaml.
    if name == "Project":
        from odyssey.project import Project

        return Project
    raise AttributeError(name)


__all__ = ["Project", "__version__"]
