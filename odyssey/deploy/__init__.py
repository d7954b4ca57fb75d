"""Deploy: the OpenAI-compatible server (keys, limits, capture, feedback, web UI) and its exports.

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "serve": "odyssey.deploy.serve",
    "build_app": "odyssey.deploy.serve",
    "pick_candidates": "odyssey.deploy.serve",
    "create_key": "odyssey.deploy.keys",
    "list_keys": "odyssey.deploy.keys",
    "revoke": "odyssey.deploy.keys",
    "export_feedback": "odyssey.deploy.export",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
