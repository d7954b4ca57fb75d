"""The import graph points down: foundation modules never import a stage, stages never import each
other, and no odyssey modules import each other at module level in a cycle.

Read with ``ast`` from the source (nothing is imported), at module level and inside functions.
A stage package's lazy exports (``_EXPORTS`` in its ``__init__``, see ``odyssey.lazy``) are
followed, so ``from odyssey.adapt import prompt_search`` counts as importing ``odyssey.adapt.prompting``.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "odyssey"
STAGES = {"select", "adapt", "align", "optimize", "deploy", "augment"}
ABOVE_STAGES = {"pipeline", "tune", "cli", "demo"}  # run the stages: `odyssey run`, `odyssey tune`, the CLI, the demo
FOUNDATION = {
    "spec",
    "project",
    "store",
    "models",
    "data",
    "metrics",
    "training",
    "evaluate",
    "engines",
    "errors",
    "paths",
    "ui",
    "prompts",
    "quant_methods",
    "tracking",
    "urls",
}

# (importer, imported) pairs allowed to break the rules below, each with its reason. Keep it short.
ALLOWED_UPWARD = {
    # Project is the Python API's facade (README: `project.prompt()`, `project.evaluate()`): it calls the
    # adapt stage's entry function inside the method, as the CLI does. Nothing below project imports it.
    ("odyssey.project", "odyssey.adapt"),
    ("odyssey.project", "odyssey.adapt.prompting"),
    # ... and `project.run()` is `odyssey run`, the pipeline over every stage.
    ("odyssey.project", "odyssey.pipeline"),
    ("odyssey.project", "odyssey.pipeline.run"),
    # The spec validates pipeline[].stage against the stage names: a standard-library-only leaf module
    # (what quant_methods is for optimize.quantize.to), so no cycle and nothing heavy.
    ("odyssey.spec", "odyssey.pipeline"),
    ("odyssey.spec", "odyssey.pipeline.names"),
}
ALLOWED_BETWEEN_STAGES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


@cache
def _lazy_exports(package: str) -> dict[str, str]:
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The odyssey modules an import statement loads (parents of a dotted name included: importing
    ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``, except the importer's own parents, already loading)."""
    named = []
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = importer.split(".") if _is_package(importer) else importer.split(".")[:-1]
            base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
        named.append(base)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:
                named.append(sub)
            elif base in MODULES and _is_package(base) and alias.name in _lazy_exports(base):
                named.append(_lazy_exports(base)[alias.name])
    loaded = set()
    for name in named:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            own_parent = importer.startswith(prefix + ".") and prefix != name
            if prefix in MODULES and prefix != importer and not own_parent:
                loaded.add(prefix)
    return loaded


@cache
def _imports(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(imports run when the module loads, imports inside functions or under ``if TYPE_CHECKING``)."""
    at_load, deferred = set(), set()

    def visit(node: ast.AST, loading: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (at_load if loading else deferred).update(_targets(module, child))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, False)
            else:
                visit(child, loading)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")), True)
    return frozenset(at_load), frozenset(deferred)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _all_edges():
    for module in MODULES:
        at_load, deferred = _imports(module)
        for target in at_load | deferred:
            yield module, target


def test_the_graph_is_read():
    # guards the checks below against passing on an empty graph
    assert len(MODULES) > 50
    assert "odyssey.quant_methods" in _imports("odyssey.optimize.methods")[0]
    assert "odyssey.adapt.prompting" in _imports("odyssey.project")[1]  # through the lazy exports
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles_at_module_level():
    graph = {module: set(_imports(module)[0]) for module in MODULES}
    assert _cycles(graph) == []


def test_foundation_never_imports_a_stage():
    upward = {(a, b) for a, b in _all_edges() if _layer(a) in FOUNDATION and _layer(b) in STAGES | ABOVE_STAGES}
    assert upward - ALLOWED_UPWARD == set()
    assert ALLOWED_UPWARD <= upward, "an allowed upward import is gone: drop it from ALLOWED_UPWARD"


def test_no_stage_imports_another():
    across = {(a, b) for a, b in _all_edges() if _layer(a) in STAGES and _layer(b) in STAGES and _layer(a) != _layer(b)}
    assert across - ALLOWED_BETWEEN_STAGES == set()
    upward = {(a, b) for a, b in _all_edges() if _layer(a) in STAGES and _layer(b) in ABOVE_STAGES}
    assert upward == set()


# The recipe files of a stage: none is another's library (what two of them share sits in a shared
# module of the stage: align.common / align.online, optimize.common / optimize.calibration).
RECIPES = {
    "odyssey.align.dpo",
    "odyssey.align.ppo",
    "odyssey.align.reward",
    "odyssey.optimize.quantization",
    "odyssey.optimize.distillation",
    "odyssey.optimize.pruning",
}


def test_no_recipe_file_imports_another():
    between = {(a, b) for a, b in _all_edges() if a in RECIPES and b in RECIPES and a != b}
    assert between == set()
    assert "odyssey.align.online" in _imports("odyssey.align.dpo")[1]  # the check reads these files


def test_spec_is_in_no_cycle_even_through_function_level_imports():
    # spec once imported optimize.methods for the quantization names, closing the cycle
    # spec -> optimize.methods -> models -> models.loading -> models.tiny -> data -> spec
    graph = {module: set() for module in MODULES}
    for a, b in _all_edges():
        graph[a].add(b)
    assert not [cycle for cycle in _cycles(graph) if "odyssey.spec" in cycle]
    assert not {m for m in _imports("odyssey.spec")[0] | _imports("odyssey.spec")[1] if _layer(m) in STAGES}


# ---- optional dependencies: a missing one is an install hint (exit 4), not a bare ImportError ----------
def _curate(tmp_path):
    from odyssey.select.curation import curate

    (tmp_path / "a.txt").write_text("one document")
    curate(tmp_path, tmp_path / "out")


def _trl_online(tmp_path):
    from odyssey.align.dpo import _trl

    _trl("rloo alignment")


def _bm25(tmp_path):
    from odyssey.augment.index import _bm25s

    _bm25s()


def _markdown(tmp_path):
    from odyssey.augment.documents import parse_markdown

    parse_markdown("# title\n\ntext", "fallback")


@pytest.mark.parametrize(
    ("module", "extra", "call"),
    [
        ("datasketch", "select", _curate),
        ("trl", "align", _trl_online),
        ("bm25s", "augment", _bm25),
        ("markdown_it", "augment", _markdown),
    ],
)
def test_a_missing_optional_dependency_names_its_extra(tmp_path, monkeypatch, module, extra, call):
    from odyssey.errors import MissingDependency

    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingDependency) as caught:
        call(tmp_path)
    assert f"llm-odyssey[{extra}]" in caught.value.hint and module in caught.value.message
