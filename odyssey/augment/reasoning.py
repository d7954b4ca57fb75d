"""Reasoning strategies for one question or a batch: plain, chain-of-thought (zero-shot and
few-shot, with self-consistency), and program-aided (PAL: the model writes Python, the sandbox
runs it). ReAct lives in :mod:`odyssey.augment.react`; :func:`solve` dispatches to all of them.
The result type and the answer extraction they share live in :mod:`odyssey.augment.answers`.

Templates follow the papers: zero-shot CoT appends "Let's think step by step" (Kojima et al.,
2022); few-shot CoT shows worked solutions (Wei et al., 2022); self-consistency samples k chains
and takes the majority answer (Wang et al., 2023); PAL shows question -> ``solution()`` programs
(Gao et al., 2023). The worked examples ship in ``data/arithmetic_shots.jsonl`` and are not in
the evaluation set.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from odyssey.augment.answers import ReasonResult, extract, format_number, parse_number

STRATEGIES = ("plain", "cot", "cot-fewshot", "pal", "react")
DATA_DIR = Path(__file__).with_name("data")


@lru_cache(maxsize=1)
def shots() -> list[dict]:
    with open(DATA_DIR / "arithmetic_shots.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---- answer extraction (the shared part is odyssey.augment.answers) --------------------------
def extract_code(text: str) -> str:
    """The Python in a model's reply: a fenced block, else from ``def solution`` on, else all of it."""
    fenced = re.findall(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", text, re.S)
    if fenced:
        return max(fenced, key=len).strip()
    start = text.find("def solution")
    return (text[start:] if start >= 0 else text).strip()


def vote(answers: list[str | None]) -> str | None:
    """Majority vote over extracted answers (ties: the first to reach the top count)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


# ---- prompts --------------------------------------------------------------------------------
def plain_messages(question: str, numeric: bool = True) -> list[dict]:
    tail = "Reply with the final number only." if numeric else "Reply with the answer only."
    return [{"role": "user", "content": f"{question}\n{tail}"}]


def cot_messages(question: str, numeric: bool = True) -> list[dict]:
    end = "The answer is <number>." if numeric else "The answer is <answer>."
    return [{"role": "user", "content": f"{question}\nLet's think step by step, then finish with '{end}'"}]


def cot_fewshot_messages(question: str, numeric: bool = True) -> list[dict]:
    messages = []
    for shot in shots():
        messages.append({"role": "user", "content": shot["question"]})
        messages.append({"role": "assistant", "content": f"{shot['reasoning']} The answer is {shot['answer']}."})
    messages.append({"role": "user", "content": question})
    return messages


PAL_INSTRUCTION = (
    "Write a Python function solution() that computes the answer to the question and returns it. "
    "Reply with the code only."
)


def pal_messages(question: str) -> list[dict]:
    messages = [{"role": "system", "content": PAL_INSTRUCTION}]
    for shot in shots():
        messages.append({"role": "user", "content": f"Question: {shot['question']}"})
        messages.append({"role": "assistant", "content": f"```python\n{shot['program']}\n```"})
    messages.append({"role": "user", "content": f"Question: {question}"})
    return messages


# ---- strategies -----------------------------------------------------------------------------
def run_plain(model, questions: list[str], numeric: bool = True, **_) -> list[ReasonResult]:
    outs = model.complete(
        [plain_messages(q, numeric) for q in questions], description="plain answers", max_new_tokens=24
    )
    return [ReasonResult(q, "plain", extract(o, numeric), [o]) for q, o in zip(questions, outs)]


def run_cot(
    model,
    questions: list[str],
    numeric: bool = True,
    *,
    fewshot: bool = False,
    samples: int = 1,
    temperature: float = 0.7,
    max_new_tokens: int = 160,
    seed: int = 0,
    **_,
) -> list[ReasonResult]:
    build = cot_fewshot_messages if fewshot else cot_messages
    name = "cot-fewshot" if fewshot else "cot"
    if samples <= 1:
        outs = model.complete([build(q, numeric) for q in questions], description=name, max_new_tokens=max_new_tokens)
        return [ReasonResult(q, name, extract(o, numeric), [o]) for q, o in zip(questions, outs)]
    # Self-consistency: k sampled chains per question, in one batched call, then a vote.
    convs = [build(q, numeric) for q in questions for _ in range(samples)]
    outs = model.complete(
        convs,
        description=f"{name} x{samples}",
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        seed=seed,
    )
    results = []
    for i, q in enumerate(questions):
        chains = outs[i * samples : (i + 1) * samples]
        answers = [extract(c, numeric) for c in chains]
        results.append(
            ReasonResult(
                q,
                f"{name}-sc{samples}",
                vote(answers),
                chains,
                [{"sample": j, "answer": a} for j, a in enumerate(answers)],
            )
        )
    return results


def run_pal(
    model,
    questions: list[str],
    numeric: bool = True,
    *,
    limits=None,
    fallback: str = "cot",
    max_new_tokens: int = 160,
    **_,
) -> list[ReasonResult]:
    """The model writes ``solution()``; the sandbox runs it; its return value is the answer.

    A program that fails (syntax error, exception, blocked call, time-out) is reported in the
    trace, and with ``fallback='cot'`` the question is answered by zero-shot CoT instead.
    """
    from odyssey.augment.sandbox import run_python

    outs = model.complete(
        [pal_messages(q) for q in questions], description="pal programs", max_new_tokens=max_new_tokens
    )
    results, failed = [], []
    for q, out in zip(questions, outs):
        code = extract_code(out)
        run = run_python(code, limits)
        value = run.value if run.ok else None
        answer = None
        if value is not None:
            number = parse_number(value) if numeric else None
            answer = format_number(number) if number is not None else (None if numeric else str(value))
        step = {
            "program": code,
            "ok": run.ok,
            "value": value,
            "stdout": run.stdout,
            "error": run.error,
            "timed_out": run.timed_out,
            "protections": run.protections,
        }
        error = None if answer is not None else (run.error or "no answer")
        result = ReasonResult(q, "pal", answer, [out], [step], error)
        results.append(result)
        if answer is None:
            failed.append(result)
    if failed and fallback == "cot":
        again = run_cot(model, [r.question for r in failed], numeric, max_new_tokens=max_new_tokens)
        for r, alt in zip(failed, again):
            r.answer = alt.answer
            r.outputs += alt.outputs
            r.trace.append({"fallback": "cot", "output": alt.outputs[0], "answer": alt.answer})
    return results


def solve(
    model, questions: list[str], strategy: str, *, numeric: bool = True, options=None, collection=None, tools=None
) -> list[ReasonResult]:
    """Answer every question with one strategy. ``options`` is the project's ``augment`` spec section."""
    from odyssey.augment.sandbox import SandboxLimits
    from odyssey.errors import OdysseyError
    from odyssey.spec import AugmentSpec

    opts = options or AugmentSpec()
    limits = SandboxLimits(timeout_s=opts.sandbox.timeout_s, cpu_s=opts.sandbox.cpu_s, memory_mb=opts.sandbox.memory_mb)
    if strategy == "plain":
        return run_plain(model, questions, numeric)
    if strategy in ("cot", "cot-fewshot"):
        return run_cot(
            model,
            questions,
            numeric,
            fewshot=strategy == "cot-fewshot",
            samples=opts.self_consistency,
            temperature=opts.temperature,
            max_new_tokens=opts.max_new_tokens,
        )
    if strategy == "pal":
        return run_pal(model, questions, numeric, limits=limits, max_new_tokens=opts.max_new_tokens)
    if strategy == "react":
        from odyssey.augment.react import Agent, default_tools

        agent = Agent(
            model,
            tools if tools is not None else default_tools(collection, limits, opts),
            max_steps=opts.max_steps,
            max_new_tokens=min(opts.max_new_tokens, 96),
        )
        return agent.run(questions, numeric=numeric)
    raise OdysseyError(f"unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
