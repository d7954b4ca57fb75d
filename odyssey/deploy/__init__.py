"""Deploy: the OpenAI-compatible server (keys, limits, capture, feedback, web UI) and its exports.

Entry points load lazily: ``odyssey --help`` imports this package to find its commands.
"""

_EXPORTS = {
    "serve": "odyssey.deploy.serve", "build_app": "odyssey.deploy.serve", "pick_candidates": "odyssey.deploy.serve",
    "create_key": "odyssey.deploy.keys", "list_keys": "odyssey.deploy.keys", "revoke": "odyssey.deploy.keys",
    "export_feedback": "odyssey.deploy.export",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
