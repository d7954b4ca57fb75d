"""A project: ``odyssey.yaml`` validated into a :class:`~odyssey.spec.Spec`, its folder and its store.

Loading keeps the line of every key so that each problem is reported as
``odyssey.yaml:12 scope.gates.rougeL: '>= abc' is not ...`` with a hint, all problems at once.
The Python API mirrors the CLI: ``Project.load(".").prompt()``, ``.evaluate(...)``, ``.status()``.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from odyssey.errors import OdysseyError, SpecError
from odyssey.spec import Spec

SPEC_FILE = "odyssey.yaml"
STATE_DIR = ".odyssey"


@dataclass
class Problem:
    """One thing wrong with a spec file."""

    file: str
    line: int | None
    field: str
    message: str
    value: Any = None
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where} {self.field or '(top level)'}: {self.message}"
        if self.value is not None and not isinstance(self.value, (dict, list)):
            text += f" (got {self.value!r})"
        if self.hint:
            text += f" — {self.hint}"
        return text


@dataclass
class SpecReport:
    path: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was checked, e.g. "data/sms.csv: 300 rows"

    @property
    def ok(self) -> bool:
        return not self.problems


def _construct(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    """Turn a composed YAML node into Python data, remembering the line of every key."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _UnusableKey(key_node.start_mark.line + 1)
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            if key in out:
                raise _DuplicateKey(path + (key,), key_node.start_mark.line + 1)
            out[key] = _construct(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), lines) for i, child in enumerate(node.value)]
    # Scalars: let PyYAML's resolver decide the type (int, float, bool, null, str).
    return yaml.safe_load(yaml.serialize(node))


class _DuplicateKey(Exception):
    def __init__(self, path, line):
        self.path, self.line = path, line


class _UnusableKey(Exception):
    def __init__(self, line):
        self.line = line


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return None
        annotation = info.annotation
        candidates = [annotation, *typing.get_args(annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems_from_validation(exc: ValidationError, file: str, lines: dict[tuple, int]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        # Drop pydantic's union-branch markers such as 'str' or 'ModelEntry' from the location.
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and (p[:1].isupper() or p in {"str", "float", "int"}))
        )
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        kind = err["type"]
        hint = None
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if kind == "extra_forbidden":
            owner = _model_at(Spec, loc[:-1])
            allowed = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = f"unknown key {loc[-1]!r}"
            hint = (
                f"did you mean {close[0]!r}?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else None)
            )
            value = None
        elif kind == "missing":
            message = "required field is missing"
            hint = "add it; `odyssey init` writes a complete example"
            value = None
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            words = [w.strip(" '") for w in expected.replace(" or ", ",").split(",") if w.strip(" '")]
            close = difflib.get_close_matches(str(value), words, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        problems.append(Problem(file, line, _dotted(loc), message, value, hint))
    # One union error is reported once per branch by pydantic; keep each field's first message.
    seen, unique = set(), []
    for p in problems:
        if (p.field, p.message) not in seen:
            seen.add((p.field, p.message))
            unique.append(p)
    return unique


def check_spec_file(path: Path) -> tuple[Spec | None, SpecReport]:
    """Parse and validate a spec file; collect every problem instead of stopping at the first."""
    report = SpecReport(path)
    name = path.name
    if not path.exists():
        report.problems.append(
            Problem(str(path), None, "", "file not found", hint="run `odyssey init NAME` to create a project")
        )
        return None, report
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        report.problems.append(
            Problem(
                name,
                line,
                "",
                f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} cannot be decoded",
                hint=f"re-save {name} as UTF-8",
            )
        )
        return None, report
    lines: dict[tuple, int] = {}
    try:
        node = yaml.compose(text)
        data = _construct(node, (), lines) if node is not None else None
    except _DuplicateKey as dup:
        report.problems.append(Problem(name, dup.line, _dotted(dup.path), "key appears twice", hint="keep one"))
        return None, report
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        report.problems.append(
            Problem(
                name, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}", hint="check indentation and quoting"
            )
        )
        return None, report
    except _UnusableKey as bad:
        report.problems.append(
            Problem(
                name,
                bad.line,
                "",
                "a key must be a plain name, not a list or mapping",
                hint="write keys as name: value",
            )
        )
        return None, report
    except RecursionError:
        report.problems.append(Problem(name, None, "", "nested too deeply to be a spec"))
        return None, report
    if not isinstance(data, dict):
        report.problems.append(Problem(name, 1, "", "the file must be a mapping (name:, scope:, models: ...)"))
        return None, report
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        report.problems.extend(_problems_from_validation(exc, name, lines))
        return None, report
    report.problems.extend(_semantic_problems(spec, path.parent, name, lines))
    return (spec if report.ok else None), report


def _semantic_problems(spec: Spec, root: Path, name: str, lines: dict[tuple, int]) -> list[Problem]:
    """Checks that need more than types: data files exist, labels for classification, ..."""
    problems = []
    source = spec.scope.data.source
    files = source.values() if isinstance(source, dict) else [source]
    for key, file in zip(source.keys() if isinstance(source, dict) else [None], files):
        if file.startswith("hf:"):
            continue
        if not (root / file).exists():
            loc = ("scope", "data", "source") + ((key,) if key else ())
            problems.append(
                Problem(
                    name,
                    lines.get(loc),
                    _dotted(loc),
                    "data file not found",
                    file,
                    hint=f"paths are relative to {root}; use 'hf:<id>' for a Hugging Face dataset",
                )
            )
    if spec.scope.task == "classification" and not spec.scope.labels:
        loc = ("scope",)
        problems.append(
            Problem(
                name,
                lines.get(loc),
                "scope.labels",
                "classification needs the label set",
                hint="add e.g. labels: [billing, shipping, other]",
            )
        )
    return problems


# ``odyssey validate`` reads at most this much of each data file: enough to find a wrong column, a
# bad encoding or malformed rows near the top, quick for a file of any size.
DATA_SAMPLE_BYTES = 8 * 1024 * 1024

# Spec fields that hold a model reference (not a candidate name): each must resolve.
MODEL_REF_FIELDS = [
    ("prompt", "model"),
    ("adapt", "model"),
    ("select", "pretrain", "init_from"),
    ("align", "reward", "model"),
    ("optimize", "distill", "student"),
    ("augment", "embedder"),
]


def check_project(path: Path) -> tuple[Spec | None, SpecReport]:
    """What ``odyssey validate`` checks: the spec, then a sample of every data file and every model
    reference (resolved without loading or downloading weights), so that what would fail at ``eval``
    fails here, with the file, line or field to fix."""
    spec, report = check_spec_file(path)
    if spec is None:
        return None, report
    lines = _key_lines(path)
    report.problems.extend(_data_problems(spec, path.parent, path.name, lines, report.notes))
    report.problems.extend(_model_problems(spec, path.parent, path.name, lines))
    return (spec if report.ok else None), report


def _key_lines(path: Path) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    _construct(yaml.compose(path.read_text(encoding="utf-8-sig")), (), lines)
    return lines


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of ``loc`` in the spec, else of its nearest parent that is written there."""
    return next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)


def _data_problems(spec: Spec, root: Path, name: str, lines: dict[tuple, int], notes: list[str]) -> list[Problem]:
    from odyssey.data import DataError, read_records, split_deterministic, to_examples

    data = spec.scope.data
    source = data.source
    files = source.items() if isinstance(source, dict) else [(None, source)]
    problems = []
    for key, file in files:
        loc = ("scope", "data", "source") + ((key,) if key else ())
        if file.startswith("hf:") or data.format == "hf":
            notes.append(f"{file}: a hub dataset, checked when a stage loads it (validate stays offline)")
            continue
        path = root / file
        try:
            rows = read_records(path, data.format, data.encoding, max_bytes=DATA_SAMPLE_BYTES)
        except DataError as exc:
            # The hint once per file, on its first bad row: the rule is the same for every row.
            problems.extend(
                Problem(file, line, _dotted(loc), what, hint=None if i else exc.hint)
                for i, (line, what) in enumerate(exc.bad_lines)
            )
            if not exc.bad_lines:
                what = exc.message.replace(f"{path}: ", "", 1).replace(f"{path} ", "the file ", 1)
                problems.append(Problem(file, None, _dotted(loc), what, hint=exc.hint))
            continue
        except OdysseyError as exc:
            problems.append(Problem(file, None, _dotted(loc), exc.message, hint=exc.hint))
            continue
        column_problems = _column_problems(rows, spec, file, name, lines)
        problems.extend(column_problems)
        if column_problems:
            continue
        try:
            examples = to_examples(rows, data, file)
        except OdysseyError as exc:
            problems.append(Problem(file, None, _dotted(loc), exc.message, hint=exc.hint))
            continue
        problems.extend(_label_problems(examples, spec, file, name, lines))
        whole_file = path.stat().st_size <= DATA_SAMPLE_BYTES
        notes.append(
            f"{file}: {len(examples)} rows"
            if whole_file
            else f"{file}: the first {len(examples)} rows checked (a {DATA_SAMPLE_BYTES >> 20} MB sample)"
        )
        if key is None and whole_file:
            splits = split_deterministic(examples, data)
            notes[-1] += " (" + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + ")"
            problems.extend(_empty_split_problems(splits, spec, name, lines))
    return problems


def _column_problems(rows: list[dict], spec: Spec, file: str, name: str, lines: dict[tuple, int]) -> list[Problem]:
    """Every column scope.data.fields names must be in the data: one problem per wrong name, at its line."""
    fields = spec.scope.data.fields
    columns = list(dict.fromkeys(k for row in rows for k in row))
    problems = []
    for role in ("input", "target", "context", "id"):
        named = getattr(fields, role)
        for column in [named] if isinstance(named, str) else named or []:
            if column in columns:
                continue
            close = difflib.get_close_matches(column, [str(c) for c in columns], n=1, cutoff=0.5)
            hint = (f"did you mean {close[0]!r}? " if close else "") + f"{file} has the columns {columns[:20]}"
            loc = ("scope", "data", "fields", role)
            problems.append(
                Problem(name, _line_of(lines, loc), _dotted(loc), f"column {column!r} is not in {file}", hint=hint)
            )
    return problems


def _label_problems(examples: list, spec: Spec, file: str, name: str, lines: dict[tuple, int]) -> list[Problem]:
    """Classification: a reference label outside scope.labels can never be predicted (the prompt offers
    only scope.labels), so every such example scores 0 - almost always a label set copied from a template."""
    from odyssey.metrics import normalize_answer

    labels = spec.scope.labels
    if spec.scope.task != "classification" or not labels:
        return []
    allowed = {normalize_answer(label) for label in labels}
    unknown = sorted({ref for ex in examples for ref in ex.references if normalize_answer(ref) not in allowed})
    if not unknown:
        return []
    loc = ("scope", "labels")
    shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    return [
        Problem(
            name,
            _line_of(lines, loc),
            _dotted(loc),
            f"{file} has target labels not in scope.labels: {shown}",
            hint="list every label the data uses under scope.labels (or fix the target column)",
        )
    ]


def _empty_split_problems(splits: dict, spec: Spec, name: str, lines: dict[tuple, int]) -> list[Problem]:
    total = sum(len(rows) for rows in splits.values())
    problems = []
    for split, rows in splits.items():
        if not rows and getattr(spec.scope.data.splits, split) > 0:
            loc = ("scope", "data", "splits", split)
            problems.append(
                Problem(
                    name,
                    _line_of(lines, loc),
                    _dotted(loc),
                    f"the {split} split gets no rows from the data's {total}",
                    hint="add rows, or raise its fraction",
                )
            )
    return problems


def _model_problems(spec: Spec, root: Path, name: str, lines: dict[tuple, int]) -> list[Problem]:
    """Resolve every model reference the way the stages will, without loading weights."""
    from odyssey.models.refs import PACKAGED, parse_ref

    refs = [(("models", i), entry.ref) for i, entry in enumerate(spec.model_entries())]
    for loc in MODEL_REF_FIELDS:
        value: Any = spec
        for part in loc:
            value = getattr(value, part)
        if value:
            refs.append((loc, value))
    problems = []
    for loc, ref in refs:
        try:
            parsed = parse_ref(ref, root)
        except OdysseyError as exc:
            problems.append(Problem(name, _line_of(lines, loc), _dotted(loc), exc.message, ref, exc.hint))
            continue
        if parsed.kind == "packaged" and not PACKAGED[parsed.value].installed:
            package = PACKAGED[parsed.value].package
            problems.append(
                Problem(
                    name,
                    _line_of(lines, loc),
                    _dotted(loc),
                    f"the packaged model needs the package {package!r}, which is not installed",
                    ref,
                    f"pip install {package}",
                )
            )
    return problems


class Project:
    """A project folder: its spec, its data and its run store."""

    def __init__(self, root: Path, spec: Spec):
        self.root = root.resolve()
        self.spec = spec

    @classmethod
    def load(cls, path: str | Path = ".") -> Project:
        path = Path(path)
        spec_path = path if path.suffix in {".yaml", ".yml"} else path / SPEC_FILE
        spec, report = check_spec_file(spec_path)
        if spec is None:
            raise SpecError(
                f"{spec_path} has {len(report.problems)} problem(s):",
                problems=[str(p) for p in report.problems],
            )
        if spec.allow_pickle:  # odyssey.models.loading reads it wherever a checkpoint is opened
            import os

            os.environ["ODYSSEY_ALLOW_PICKLE"] = "1"
        return cls(spec_path.parent, spec)

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @cached_property
    def store(self):
        from odyssey.store import Store

        store = Store.open(self.state_dir)
        store.ensure_project(self.spec.name, self.root)
        store.bind(self.spec.scope, self.default_prompt())
        if self.spec.tracking.mlflow or self.spec.tracking.tensorboard:
            from odyssey.tracking import install_listeners

            install_listeners(store, self.spec.tracking, root=self.root, project=self.spec.name)
        return store

    # ---- candidates: the one resolver (odyssey.store.candidates) ------------------------------
    def default_prompt(self):
        """The project's one default prompt: the task's instruction (or ``prompt.instruction``) with its
        labels, ``prompt.system``, and ``evaluate.generation``; zero-shot. What a model reference is
        evaluated, trained and served with until a stage keeps a better prompt."""
        from odyssey.prompts import PromptConfig

        spec = self.spec
        return PromptConfig.default(
            spec.scope.task,
            spec.scope.labels,
            spec.prompt.instruction,
            generation=spec.evaluate.generation.model_dump(),
            system=spec.prompt.system,
        )

    def candidate(self, which: str | None = "best"):
        """A Candidate for a stored candidate's name, ``best`` (``Store.best``; with nothing scored on
        test yet, the first model zero-shot), or a model reference: a pseudo-candidate
        ``<model>:zero-shot`` with :meth:`default_prompt`, not stored (``store.ensure`` stores it).
        The CLI (``--candidate``, ``--from``, ``--start``), the Python API and the server resolve here."""
        from odyssey.models import parse_ref
        from odyssey.store.candidates import Candidate, UnknownCandidate, zero_shot

        if isinstance(which, Candidate):
            return which
        which = which or "best"
        found = self.store.best() if which == "best" else self.store.candidate_obj(which)
        if found is not None:
            return found
        ref = self.default_model() if which == "best" else which
        try:
            parsed = parse_ref(ref, self.root)
        except OdysseyError as exc:
            known = ", ".join(c["name"] for c in self.store.candidates()) or "none yet"
            raise UnknownCandidate(
                f"no candidate named {which!r}",
                hint=f"candidates: {known}; or 'best', or a model reference (packaged:..., "
                f"tiny:..., a folder, a .gguf): as a model, {exc.message}",
            ) from None
        return zero_shot(f"{parsed.slug}:zero-shot", ref, self.default_prompt())

    # ---- data -------------------------------------------------------------------------------
    def dataset(self):
        from odyssey.data import load_task_data

        return load_task_data(self.spec.scope, self.root)

    def examples(self, split: str, limit: int | None = None):
        rows = self.dataset().split(split)
        return rows[:limit] if limit else rows

    # ---- stages (the Python API mirrors the CLI) --------------------------------------------
    def prompt(self, **overrides):
        from odyssey.adapt import prompt_search

        return prompt_search(self, **overrides)

    def evaluate(self, model: str | None = None, split: str = "test", **options):
        from odyssey.evaluate import evaluate_candidate

        return evaluate_candidate(self, model=model, split=split, **options)

    def run(self, **options):
        """``odyssey run``: the whole lifecycle (profile=, from_step=, only=, dry_run=); see odyssey.pipeline."""
        from odyssey.pipeline import run_pipeline

        return run_pipeline(self, **options)

    def status(self):
        from odyssey.evaluate.board import build_board

        return build_board(self)

    def models(self):
        from odyssey.models import catalog

        return catalog(self)

    def default_model(self) -> str:
        entries = self.spec.model_entries()
        if not entries:
            raise OdysseyError(
                f"{self.spec_path}: no models are listed",
                hint="add a candidate under models:, e.g. - packaged:smollm2-135m-instruct",
            )
        return entries[0].ref
