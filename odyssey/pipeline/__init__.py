"""``odyssey run``: the lifecycle odyssey.yaml describes, step by step, cached and resumable.

- :mod:`odyssey.pipeline.names`: the stage names and the built-in profiles (stdlib only: the spec checks them);
- :mod:`odyssey.pipeline.stages`: the one mapping table, stage -> entry function, hashed sections, parent;
- :mod:`odyssey.pipeline.plan`: the spec's ``pipeline:`` as validated, ordered steps; input hashes;
- :mod:`odyssey.pipeline.run`: :func:`run_pipeline`, cached / resumed / refused steps, the dry run;
- :mod:`odyssey.pipeline.report`: the board, each stage's gain with a bootstrap interval, the report.

Entry points load lazily: ``odyssey --help`` imports this package to find its command.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "run_pipeline": "odyssey.pipeline.run",
    "PipelineResult": "odyssey.pipeline.run",
    "make_plan": "odyssey.pipeline.plan",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
