"""Task data: read JSONL/JSON/CSV/Parquet files or Hugging Face datasets, map columns to roles
(input, references, context), and split deterministically.

Every stage sees the same :class:`Example` objects, so "validation" means the same rows for the
prompt search, fine-tuning and evaluation.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError, SpecError, Unavailable
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


_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Bad rows listed one by one in an error; the rest are counted.
_MAX_LISTED = 20


class DataError(SpecError):
    """A data file that cannot be read as it is. ``bad_lines`` holds ``(line, what is wrong)`` for each bad
    row found, so ``odyssey validate`` can list them as file:line problems."""

    def __init__(
        self,
        path: Path,
        message: str,
        *,
        hint: str | None = None,
        bad_lines: list[tuple[int | None, str]] | None = None,
    ):
        self.path = Path(path)
        self.bad_lines = bad_lines or []
        shown = [f"{path}:{line}: {what}" if line else f"{path}: {what}" for line, what in self.bad_lines[:_MAX_LISTED]]
        if len(self.bad_lines) > _MAX_LISTED:
            shown.append(f"... and {len(self.bad_lines) - _MAX_LISTED} more")
        super().__init__(message, hint=hint, problems=shown)


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "jsonl")


def _read_text(path: Path, encoding: str, max_bytes: int | None) -> tuple[str, bool]:
    """The file's text, and whether it was cut to ``max_bytes`` (at a line end) for a sample.

    A byte that does not decode is an error naming its offset and line, not a traceback: the usual
    cause is a file saved as Latin-1 or Windows-1252, which ``scope.data.encoding`` declares."""
    with open(path, "rb") as fh:
        raw = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        cut = raw.rfind(b"\n", 0, max_bytes) if max_bytes is not None and len(raw) > max_bytes else None
        if cut == -1:  # no line end in the sample: one huge line, read it whole
            raw += fh.read()
    truncated = cut is not None and cut >= 0
    if truncated:
        raw = raw[: cut + 1]
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name.
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        return raw.decode(codec), truncated
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        what = f"not valid {encoding} text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} cannot be decoded"
        raise DataError(
            path,
            f"{path}:{line}: {what} ({exc.reason})",
            hint=f"set the file's encoding in odyssey.yaml, e.g. scope.data.encoding: latin-1 (cp1252 for files from "
            f"Windows), or re-save {path.name} as UTF-8",
            bad_lines=[(line, what)],
        ) from None


def read_records(
    path: Path, fmt: str = "auto", encoding: str = "utf-8", max_bytes: int | None = None
) -> list[dict[str, Any]]:
    """Rows of a local file as dicts. Every bad line or row is reported with file and line number.

    ``max_bytes`` reads a sample: the first that many bytes, cut at a line end (``odyssey validate``).
    A file with no records at all is an error too: nothing downstream can use it."""
    path = Path(path)
    if not path.exists():
        raise OdysseyError(f"data file not found: {path}", hint="check scope.data.source in odyssey.yaml")
    if path.is_dir():
        raise OdysseyError(f"{path} is a folder, not a data file", hint="point scope.data.source at a file in it")
    fmt = _format_of(path, fmt)
    if fmt == "parquet":
        return _require_rows(path, _read_parquet(path, max_bytes), "no rows")
    if fmt == "json":
        max_bytes = None  # one JSON document: a cut one is not a sample but a syntax error
    text, truncated = _read_text(path, encoding, max_bytes)
    if not text.strip():
        raise DataError(path, f"{path} is empty", hint="put one record per line (JSONL) or a header and rows (CSV)")
    if fmt == "jsonl":
        return _require_rows(path, _read_jsonl(path, text), "no records")
    if fmt == "json":
        return _require_rows(path, _read_json(path, text), "no records")
    if fmt in {"csv", "tsv"}:
        return _require_rows(
            path,
            _read_delimited(path, text, "\t" if fmt == "tsv" else ",", truncated),
            "a header line but no data rows",
        )
    raise OdysseyError(f"{path}: unsupported data format {fmt!r}")


def _require_rows(path: Path, rows: list[dict], what_it_has: str) -> list[dict]:
    if not rows:
        raise DataError(
            path,
            f"{path} has {what_it_has}",
            hint="add examples to it, or point scope.data.source at the file that holds them",
        )
    return rows


def _read_jsonl(path: Path, text: str) -> list[dict]:
    rows, bad = [], []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:
            bad.append((number, "JSON nested too deeply"))
            continue
        if not isinstance(row, dict):
            bad.append((number, f"expected a JSON object, got {type(row).__name__}"))
            continue
        rows.append(row)
    if bad:
        first = bad[0]
        raise DataError(
            path,
            f"{path}:{first[0]}: {first[1]}" + (f" ({len(bad)} bad lines in all)" if len(bad) > 1 else ""),
            hint="each line of a .jsonl file must be one JSON object",
            bad_lines=bad,
        )
    return rows


def _read_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            path,
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
            hint="a .json data file holds one list of objects; for one object per line use .jsonl",
            bad_lines=[(exc.lineno, exc.msg)],
        ) from None
    except RecursionError:
        raise DataError(path, f"{path}: JSON nested too deeply") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise DataError(
            path,
            f"{path}: expected a list of objects (or {{'data': [...]}})",
            hint='e.g. [{"input": "...", "target": "..."}]',
        )
    return data


def _read_parquet(path: Path, max_bytes: int | None) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if max_bytes is None:
            return pq.read_table(path).to_pylist()
        batch = next(pq.ParquetFile(path).iter_batches(batch_size=1000), None)
        return batch.to_pylist() if batch is not None else []
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            path,
            f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})",
            hint="check the file, or its extension: .parquet is read as Parquet",
        ) from None


def _read_delimited(path: Path, text: str, delimiter: str, truncated: bool) -> list[dict]:
    """CSV/TSV rows as dicts keyed by the header. The rule: every row has exactly as many fields as the
    header, and a quote that opens a field closes it. A file that breaks it is refused with the line of
    each bad row, rather than loaded with rows shifted or swallowed."""
    import csv
    import io

    csv.field_size_limit(64 * 1024 * 1024)  # the default (128 KiB) is shorter than some documents
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows, bad = [], []
    start = 1  # the line the next record starts on
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                if not truncated:  # a sample cut inside a quoted field is not the file's fault
                    bad.append((start, "a quote opened in this row is never closed"))
                break
            bad.append((start, f"malformed quoting ({exc})" + _spans_lines(start, reader.line_num)))
            start = reader.line_num + 1
            continue
        first, start = start, reader.line_num + 1
        if not fields or fields == [""]:
            continue  # a blank line
        if header is None:
            header = fields
            _refuse_wrong_delimiter(path, header, delimiter)
            continue
        if len(fields) != len(header):
            bad.append((first, _field_count_problem(fields, header, first, reader.line_num)))
            continue
        rows.append(dict(zip(header, fields)))
    if bad:
        name = "tab" if delimiter == "\t" else "comma"
        raise DataError(
            path,
            f"{path}: {len(bad)} bad row(s), the first on line {bad[0][0]}; refusing the file rather than "
            f"loading shifted rows (rule: every row has the header's {len(header or [])} {name}-separated fields)",
            hint=f"the rule: every row has the header's {len(header or [])} fields and every quote closes; quote a "
            'field that contains the separator or a line break ("like, this"), double a quote inside a quoted '
            'field ("")',
            bad_lines=bad,
        )
    return rows


def _field_count_problem(fields: list[str], header: list[str], first: int, last: int) -> str:
    return f"{len(fields)} field(s), the header has {len(header)}" + _spans_lines(first, last)


def _spans_lines(first: int, last: int) -> str:
    if last <= first:
        return ""
    return f"; this row runs from line {first} to line {last}: is a quote on line {first} not closed?"


def _refuse_wrong_delimiter(path: Path, header: list[str], delimiter: str) -> None:
    if delimiter == "," and len(header) == 1 and "\t" in header[0]:
        raise DataError(
            path,
            f"{path}:1: looks tab-separated: the header line holds tabs and no commas",
            hint="rename it to .tsv, or set scope.data.format: tsv in odyssey.yaml",
            bad_lines=[(1, "looks tab-separated")],
        )


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
    targets = (
        [] if fields.target is None else ([fields.target] if isinstance(fields.target, str) else list(fields.target))
    )
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
    cuts = {"train": order[:n_train], "validation": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    # Keep each split in file order, so "the first 100 rows" means what it says.
    return {name: [rows[i] for i in sorted(idx)] for name, idx in cuts.items()}


def load_task_data(scope: Scope, root: Path) -> TaskData:
    data = scope.data
    source = data.source
    if isinstance(source, dict):
        splits = {}
        for name, file in source.items():
            rows = (
                _load_hf(file[3:], data.hf_config).get(name, [])
                if file.startswith("hf:")
                else read_records(root / file, data.format, data.encoding)
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
    rows = to_examples(read_records(root / source, data.format, data.encoding), data, source)
    return TaskData(split_deterministic(rows, data), source)
