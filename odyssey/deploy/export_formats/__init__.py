"""``odyssey export``: a candidate as a Hugging Face folder, a GGUF file or an Ollama model that answers as
it did in evaluation (``candidate.py`` says how). Entry points load lazily (``odyssey --help`` imports
this package to find its command)."""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "export_candidate": "odyssey.deploy.export_formats.candidate",
    "plan_export": "odyssey.deploy.export_formats.candidate",
    "ExportResult": "odyssey.deploy.export_formats.candidate",
    "FORMATS": "odyssey.deploy.export_formats.candidate",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
