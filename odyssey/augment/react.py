"""A ReAct agent (Yao et al., 2023): the model alternates Thought / Action, a tool's result comes
back as the Observation, until ``finish[answer]`` or the step limit. Every step is kept in the
trace that ``odyssey reason`` prints and the store records.

Tools are plain Python callables ``str -> str``: ``retrieve`` (a collection), ``calculator`` (the
PAL sandbox) and any the user registers (``@tool`` in Python, or ``augment.tools`` in the spec as
``module:function`` / ``file.py:function``).

Questions run in lock-step: each step is one batched generation for every question still open,
so an evaluation set costs max_steps batched calls rather than questions x steps single ones.
LangChain's AgentExecutor would run each question on its own through an LLM wrapper; the loop is
short enough that owning it keeps batching, the sandbox and the trace format in one place.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from odyssey.augment.answers import ReasonResult, extract, format_number, parse_number
from odyssey.errors import OdysseyError

_ACTION = re.compile(r"Action\s*\d*\s*:\s*([A-Za-z_][\w-]*)\s*(?:\[(.*)\]|\((.*)\)|:\s*(.*))", re.S)
_THOUGHT = re.compile(r"Thought\s*\d*\s*:\s*(.*?)(?=\n\s*Action|\Z)", re.S)
MAX_OBSERVATION_CHARS = 600


@dataclass
class Tool:
    name: str
    description: str
    fn: Callable[[str], object]

    def __call__(self, text: str) -> str:
        try:
            out = self.fn(text)
        except Exception as exc:  # a tool's failure is an observation the model can react to
            return f"error: {type(exc).__name__}: {exc}"
        out = "" if out is None else str(out)
        return out[:MAX_OBSERVATION_CHARS] + (" ..." if len(out) > MAX_OBSERVATION_CHARS else "")


def tool(fn=None, *, name: str | None = None, description: str | None = None):
    """Register a Python function as a tool: ``@tool`` or ``tool(fn, name=..., description=...)``."""

    def wrap(f):
        doc = (inspect.getdoc(f) or f"calls {f.__name__}").strip().splitlines()[0]
        return Tool(name or f.__name__, description or doc, f)

    return wrap(fn) if fn is not None else wrap


def calculator_tool(limits=None) -> Tool:
    from odyssey.augment.sandbox import run_python

    def calculate(expression: str):
        code = expression.strip().strip("`")
        if "\n" not in code and not code.startswith(("def ", "import ", "from ")):
            code = f"answer = ({code})"
        result = run_python(code, limits)
        if not result.ok:
            return f"error: {result.error}"
        value = result.value
        if value is None:
            return "error: no value; give an expression such as calculator[12 * 7 + 5]"
        number = parse_number(value) if isinstance(value, (int, float)) else None
        return format_number(number) if number is not None else value

    return Tool("calculator", "evaluates a Python arithmetic expression, e.g. calculator[12 * 7 + 5]", calculate)


def retrieve_tool(collection, k: int = 2, mode: str = "hybrid") -> Tool:
    def retrieve(query: str):
        hits = collection.search(query, k=k, mode=mode)
        if not hits:
            return "no documents found"
        return "\n".join(f"[{h.citation}] {' '.join(h.text.split()[:60])}" for h in hits)

    return Tool("retrieve", f"searches the '{collection.name}' documents, e.g. retrieve[refund window]", retrieve)


def load_tool(spec: str, root: Path | None = None) -> Tool:
    """A user tool from ``module:function`` or ``path/to/file.py:function`` (relative to the project)."""
    if ":" not in spec:
        raise OdysseyError(
            f"tool {spec!r} is not 'module:function' or 'file.py:function'",
            hint="e.g. augment.tools: ['tools.py:lookup_price']",
        )
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = (Path(root or ".") / target).resolve()
            if not path.exists():
                raise OdysseyError(f"tool file not found: {path}", hint="paths are relative to the project folder")
            name = f"odyssey_user_tools_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except OdysseyError:
        raise
    except Exception as exc:
        raise OdysseyError(
            f"could not import tool {spec!r}: {type(exc).__name__}: {exc}",
            hint="check the module path and that it imports cleanly",
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise OdysseyError(f"tool {spec!r}: {target} has no {attr!r}", hint="name a function defined there")
    return fn if isinstance(fn, Tool) else tool(fn)


def default_tools(collection=None, limits=None, options=None, root: Path | None = None) -> list[Tool]:
    tools = [calculator_tool(limits)]
    if collection is not None:
        tools.append(retrieve_tool(collection, mode=getattr(options, "retrieval", "hybrid")))
    for spec in getattr(options, "tools", None) or []:
        tools.append(load_tool(spec, root))
    return tools


def parse_step(text: str) -> tuple[str, str | None, str | None]:
    """(thought, action, input) from one model turn; action None when none could be read."""
    thought_match = _THOUGHT.search(text)
    thought = (thought_match.group(1) if thought_match else text.split("Action")[0]).strip()
    match = _ACTION.search(text)
    if not match:
        return thought, None, None
    arg = next((g for g in match.groups()[1:] if g is not None), "")
    arg = arg.split("\n")[0] if match.group(4) is not None else arg
    return thought, match.group(1).lower(), arg.strip().strip("'\"")


class Agent:
    def __init__(self, model, tools: list[Tool], *, max_steps: int = 5, max_new_tokens: int = 96):
        names = [t.name for t in tools]
        if len(set(names)) != len(names) or "finish" in names:
            raise OdysseyError(f"tool names must be unique and not 'finish': {names}")
        self.model, self.tools = model, {t.name: t for t in tools}
        self.max_steps, self.max_new_tokens = max_steps, max_new_tokens

    def register(self, fn=None, **kw) -> Tool:
        t = fn if isinstance(fn, Tool) else tool(fn, **kw)
        self.tools[t.name] = t
        return t

    def system_prompt(self) -> str:
        lines = [f"- {t.name}[input]: {t.description}" for t in self.tools.values()]
        lines.append("- finish[answer]: gives the final answer")
        return (
            "Answer the question. Think step by step and use the tools. Tools:\n"
            + "\n".join(lines)
            + "\nReply with exactly one step in this format:\nThought: <your reasoning>\nAction: <tool>[<input>]"
        )

    def _examples(self) -> list[dict]:
        ex = [
            {"role": "user", "content": "Question: A box has 4 rows of 6 eggs. 5 eggs break. How many eggs are left?"},
            {
                "role": "assistant",
                "content": "Thought: There are 4 * 6 eggs and 5 break.\nAction: calculator[4 * 6 - 5]",
            },
            {"role": "user", "content": "Observation: 19"},
            {"role": "assistant", "content": "Thought: I know the answer.\nAction: finish[19]"},
        ]
        if "retrieve" in self.tools:
            ex += [
                {"role": "user", "content": "Question: What colour is the Alpine 1 stove?"},
                {
                    "role": "assistant",
                    "content": "Thought: I should look this up.\nAction: retrieve[Alpine 1 stove colour]",
                },
                {"role": "user", "content": "Observation: [stoves.md § Alpine 1] The Alpine 1 stove is orange."},
                {"role": "assistant", "content": "Thought: The documents say it is orange.\nAction: finish[orange]"},
            ]
        return ex

    def run(self, questions: list[str], *, numeric: bool = False) -> list[ReasonResult]:
        head = [{"role": "system", "content": self.system_prompt()}, *self._examples()]
        convs = [head + [{"role": "user", "content": f"Question: {q}"}] for q in questions]
        results = [ReasonResult(q, "react", None) for q in questions]
        open_ = list(range(len(questions)))
        for step in range(1, self.max_steps + 1):
            if not open_:
                break
            stops = ["Observation", "\nQuestion:"]
            outs = self.model.complete(
                [convs[i] for i in open_],
                description=f"react step {step}",
                stop=stops,
                max_new_tokens=self.max_new_tokens,
            )
            still_open = []
            for i, out in zip(open_, outs):
                # Never let the model write its own observations (any model, even one ignoring stop=).
                cut = min((out.find(s) for s in stops if s in out), default=-1)
                out = out[:cut].rstrip() if cut >= 0 else out
                thought, action, arg = parse_step(out)
                entry = {"step": step, "thought": thought, "action": action, "input": arg, "raw": out}
                results[i].outputs.append(out)
                convs[i].append({"role": "assistant", "content": out.strip() or "Thought:"})
                if action == "finish":
                    entry["observation"] = None
                    results[i].answer = extract(arg, numeric) if numeric else (arg or None)
                    results[i].trace.append(entry)
                    continue
                if action is None:
                    observation = (
                        "Invalid format. Reply with 'Thought: ...' and then 'Action: <tool>[<input>]' "
                        f"using one of: {', '.join([*self.tools, 'finish'])}."
                    )
                elif action not in self.tools:
                    observation = f"Unknown tool {action!r}. Tools: {', '.join([*self.tools, 'finish'])}."
                else:
                    observation = self.tools[action](arg or "")
                entry["observation"] = observation
                results[i].trace.append(entry)
                convs[i].append({"role": "user", "content": f"Observation: {observation}"})
                still_open.append(i)
            open_ = still_open
        for i in open_:  # the step limit ended these: take what the last step said, and say so
            results[i].error = f"stopped after the step limit ({self.max_steps} steps) without finish[...]"
            last = results[i].trace[-1] if results[i].trace else {}
            if numeric:
                observed = last.get("observation") if last.get("action") == "calculator" else None
                text = str(observed) if observed else (last.get("thought") or "")
                results[i].answer = extract(text, True)
        return results
