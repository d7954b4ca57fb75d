"""What every reasoning strategy and the ReAct agent share: the result of answering one question, and
reading the answer (a number, or a short text) out of a model's reply.

Its own module so that :mod:`odyssey.augment.reasoning` (which dispatches to the agent) and
:mod:`odyssey.augment.react` (which returns these results) do not import each other.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*\**\s*(?:[€$£]\s*)?(" + _NUMBER + ")", re.I)
_ANSWER_TEXT = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+?)(?:\.\s|\.?$|\n)", re.I)


@dataclass
class ReasonResult:
    question: str
    strategy: str
    answer: str | None
    outputs: list[str] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# ---- answer extraction --------------------------------------------------------------------
def format_number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"


def parse_number(text) -> float | None:
    if text is None:
        return None
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    match = re.search(_NUMBER, str(text).replace("\u2212", "-"))
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def extract_number(text: str) -> str | None:
    """'The answer is 42' wins; otherwise the last number in the text."""
    text = text.replace("\u2212", "-")
    found = _ANSWER_IS.findall(text)
    candidates = found or re.findall(_NUMBER, text)
    for raw in reversed(candidates):
        value = parse_number(raw)
        if value is not None:
            return format_number(value)
    return None


def extract_text_answer(text: str) -> str:
    match = _ANSWER_TEXT.search(text)
    if match:
        return match.group(1).strip().strip("*").strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def extract(text: str, numeric: bool) -> str | None:
    return extract_number(text) if numeric else (extract_text_answer(text) or None)
