"""``odyssey init``: a new project folder with a complete, commented odyssey.yaml and example data."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

from odyssey.data import example_data_dir
from odyssey.errors import OdysseyError

# Task -> the example data file shipped for it.
EXAMPLES = {
    "summarization": "summarization/dialogues.jsonl",
    "classification": "classification/tickets.jsonl",
    "qa": "qa/passages.jsonl",
}


def template(task: str) -> str:
    return (resources.files("odyssey") / "templates" / f"{task}.yaml").read_text(encoding="utf-8")


def init_project(path: str | Path, task: str = "summarization", *, force: bool = False) -> Path:
    if task not in EXAMPLES:
        raise OdysseyError(f"no starter project for task {task!r}", hint=f"tasks with starters: {', '.join(EXAMPLES)}")
    root = Path(path)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.resolve().name).strip("-.") or "project"
    spec_path = root / "odyssey.yaml"
    if spec_path.exists() and not force:
        raise OdysseyError(f"{spec_path} already exists", hint="use --force to overwrite it, or pick another folder")
    (root / "data").mkdir(parents=True, exist_ok=True)
    source = example_data_dir() / EXAMPLES[task]
    shutil.copy2(source, root / "data" / source.name)
    spec_path.write_text(template(task).replace("{name}", name), encoding="utf-8")
    return root
