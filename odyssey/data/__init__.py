"""Task data: read JSONL/JSON/CSV/Parquet files or Hugging Face datasets, map columns to roles
(input, references, context), and split deterministically.

Every stage sees the same :class:`Example` objects, so "validation" means the same rows for the
prompt search, fine-tuning and evaluation.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError, Unavailable
from odyssey.spec import DataSpec, Scope

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    id: str
    input: str
    references: tuple[str, ...] = ()
    context: str | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def target(self) -> str:
        """The first reference (what a fine-tune trains on)."""
        return self.references[0] if self.references else ""


@dataclass
class TaskData:
    splits: dict[str, list[Example]]
    source: str

    def split(self, name: str) -> list[Example]:
        if name not in SPLITS:
            raise OdysseyError(f"unknown split {name!r}", hint=f"use one of {', '.join(SPLITS)}")
        rows = self.splits.get(name) or []
        if not rows:
            sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
            raise OdysseyError(
                f"the {name} split of {self.source} is empty ({sizes})",
                hint="give it a file under scope.data.source, or raise its fraction under scope.data.splits",
            )
        return rows

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over every example of every split: the store links results to the exact data."""
        digest = hashlib.sha256()
        for name in SPLITS:
            for ex in self.splits.get(name, []):
                digest.update(json.dumps([name, ex.id, ex.input, list(ex.references), ex.context]).encode())
        return digest.hexdigest()


def example_data_dir() -> Path:
    """The small datasets shipped inside the package (written for Odyssey, Apache-2.0)."""
    return Path(str(resources.files("odyssey.data") / "examples"))


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(
        suffix, "jsonl"
    )


def read_records(path: Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """Rows of a local file as dicts. Bad lines are reported with file and line number."""
    path = Path(path)
    if not path.exists():
        raise OdysseyError(f"data file not found: {path}", hint="check scope.data.source in odyssey.yaml")
    fmt = _format_of(path, fmt)
    if fmt == "jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise OdysseyError(
                        f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})",
                        hint="each line of a .jsonl file must be one JSON object",
                    ) from None
                if not isinstance(row, dict):
                    raise OdysseyError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    if fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise OdysseyError(f"{path}: expected a list of objects (or {{'data': [...]}})")
        return data
    if fmt == "csv":
        import csv

        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise OdysseyError(f"{path}: unsupported data format {fmt!r}")


def _load_hf(dataset_id: str, config: str | None) -> dict[str, list[dict]]:
    """Real ``datasets.load_dataset``; offline or unknown ids become a clear error."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise OdysseyError("loading hub datasets needs the 'datasets' package", hint="pip install datasets") from exc
    try:
        loaded = datasets.load_dataset(dataset_id, config)
    except Exception as exc:  # network errors, unknown ids and gated datasets all land here
        raise Unavailable(
            f"could not load Hugging Face dataset {dataset_id!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
            hint="check the id and your network (HF_HUB_OFFLINE=1 blocks downloads), or point scope.data.source at a local file",
        ) from None
    aliases = {"validation": ("validation", "valid", "dev", "val"), "train": ("train",), "test": ("test",)}
    out = {}
    for name, keys in aliases.items():
        for key in keys:
            if key in loaded:
                out[name] = [dict(r) for r in loaded[key]]
                break
    return out


def _value(row: dict, column: str, where: str) -> Any:
    if column not in row:
        raise OdysseyError(
            f"{where}: column {column!r} not found; columns are {sorted(row)}",
            hint="set scope.data.fields in odyssey.yaml to the right column names",
        )
    return row[column]


def to_examples(rows: list[dict], data: DataSpec, where: str) -> list[Example]:
    fields = data.fields
    inputs = [fields.input] if isinstance(fields.input, str) else list(fields.input)
    targets = [] if fields.target is None else ([fields.target] if isinstance(fields.target, str) else list(fields.target))
    out = []
    for index, row in enumerate(rows):
        here = f"{where} row {index + 1}"
        parts = [str(_value(row, c, here)) for c in inputs]
        text = parts[0] if len(parts) == 1 else "\n".join(f"{c}: {p}" for c, p in zip(inputs, parts))
        refs: list[str] = []
        for column in targets:
            value = row.get(column) if len(targets) > 1 else _value(row, column, here)
            if isinstance(value, list):
                refs.extend(str(v) for v in value if v not in (None, ""))
            elif value not in (None, ""):
                refs.append(str(value))
        context = str(_value(row, fields.context, here)) if fields.context else None
        ex_id = str(row[fields.id]) if fields.id and fields.id in row else str(row.get("id", index))
        out.append(Example(ex_id, text, tuple(refs), context, row))
    return out


def split_deterministic(rows: list[Example], data: DataSpec) -> dict[str, list[Example]]:
    """Shuffle once with the spec's seed, then cut by the fractions: same seed, same splits."""
    order = list(range(len(rows)))
    random.Random(data.seed).shuffle(order)
    n = len(order)
    n_train = int(round(n * data.splits.train))
    n_val = int(round(n * data.splits.validation))
    cuts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    # Keep each split in file order, so "the first 100 rows" means what it says.
    return {name: [rows[i] for i in sorted(idx)] for name, idx in cuts.items()}


def load_task_data(scope: Scope, root: Path) -> TaskData:
    data = scope.data
    source = data.source
    if isinstance(source, dict):
        splits = {}
        for name, file in source.items():
            rows = _load_hf(file[3:], data.hf_config).get(name, []) if file.startswith("hf:") else read_records(
                root / file, data.format
            )
            splits[name] = to_examples(rows, data, file)
        return TaskData(splits, ", ".join(source.values()))
    if source.startswith("hf:") or data.format == "hf":
        dataset_id = source.removeprefix("hf:")
        by_split = _load_hf(dataset_id, data.hf_config)
        if by_split.get("train") and not (by_split.get("validation") and by_split.get("test")):
            rows = to_examples(by_split["train"], data, source)
            splits = split_deterministic(rows, data)
            splits.update({k: to_examples(v, data, source) for k, v in by_split.items() if k != "train" and v})
        else:
            splits = {k: to_examples(v, data, source) for k, v in by_split.items()}
        return TaskData(splits, source)
    rows = to_examples(read_records(root / source, data.format), data, source)
    return TaskData(split_deterministic(rows, data), source)
