"""Answer extraction, voting, refusal detection, scoring, and the ReAct loop with real tools.

The ReAct loop tests drive the agent with a scripted model (fixed replies) so that parsing, tool
dispatch, the step limit and the trace are checked exactly; the tools (sandbox, user tools) are
real. End-to-end runs with a real (tiny) model are in test_cli.py.
"""

import pytest

from odyssey.augment.answers import extract_number, extract_text_answer
from odyssey.augment.evaluate import contains_answer, grounded_questions, numeric_correct
from odyssey.augment.rag import is_refusal
from odyssey.augment.react import Agent, calculator_tool, load_tool, parse_step, tool
from odyssey.augment.reasoning import extract_code, vote
from odyssey.augment.sandbox import SandboxLimits
from odyssey.errors import OdysseyError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 boxes of 12 is 36, minus 5 is 31. The answer is 31.", "31"),
        ("So she pays 2 + 3 = 5 euros... The answer is: 1,200", "1200"),
        ("The answer is €12.50 in total", "12.5"),
        ("First 7 then 8, finally 15", "15"),
        ("It drops to −4 degrees", "-4"),
        ("no digits here", None),
        ("The answer is 2.0", "2"),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_extract_text_code_and_vote():
    assert extract_text_answer("Let me see.\nThe answer is Graz. It is in Austria.") == "Graz"
    assert extract_text_answer("line one\nOstrava") == "Ostrava"
    assert extract_code("Here:\n```python\ndef solution():\n    return 4\n```\nDone") == "def solution():\n    return 4"
    assert extract_code("Sure! def solution():\n    return 1").startswith("def solution")
    assert vote(["3", None, "4", "4", "3"]) == "3"  # tie: the first to reach the top count
    assert vote(["4", "4", "3"]) == "4" and vote([None, None]) is None


def test_refusals_and_scoring():
    assert is_refusal("Not in the documents.") and is_refusal("The sources do not mention the CEO.")
    assert not is_refusal("The refund window is 45 days [1].")
    assert contains_answer("Refunds take 6 business days [1].", ["6 business days", "6"])
    assert not contains_answer("Refunds take 16 business days.", ["6"])
    assert numeric_correct("2.50", 2.5) and numeric_correct(396, 396) and not numeric_correct("395", 396)
    assert not numeric_correct(None, 3)
    items = grounded_questions()
    assert len(items) == 48 and sum(not q["answerable"] for q in items) == 12
    few = grounded_questions(8)
    assert len(few) == 8 and sum(not q["answerable"] for q in few) == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Thought: I need 4*6.\nAction: calculator[4 * 6]", ("I need 4*6.", "calculator", "4 * 6")),
        ("Thought: done\nAction: finish[Graz]", ("done", "finish", "Graz")),
        ("Thought: look\nAction: retrieve: refund window\nmore", ("look", "retrieve", "refund window")),
        ("Action: Calculator(2+2)", ("", "calculator", "2+2")),
        ("I think it is 5", ("I think it is 5", None, None)),
    ],
)
def test_parse_step(text, expected):
    assert parse_step(text) == expected


class Scripted:
    """Replies from a list per question, in order (a stand-in for the LLM only)."""

    ref = "scripted"

    def __init__(self, scripts):
        self.scripts = [list(s) for s in scripts]
        self.calls = []

    def complete(self, conversations, **kw):
        self.calls.append((conversations, kw))
        return [self.scripts[self._index(c)].pop(0) for c in conversations]

    def _index(self, conversation):
        question = next(m["content"] for m in reversed(conversation) if m["content"].startswith("Question:"))
        return self.questions.index(question.removeprefix("Question: "))


def test_react_loop_uses_real_tools_and_keeps_the_trace(tmp_path):
    tools_file = tmp_path / "tools.py"
    tools_file.write_text(
        'def price(item):\n    """looks up a price in euros"""\n    return {"tent": 349}.get(item.strip(), "unknown")\n'
    )
    price = load_tool("tools.py:price", tmp_path)
    assert price.name == "price" and price.description == "looks up a price in euros"
    questions = ["How much are two tents?", "What is 7 * 6?", "Loop forever?"]
    model = Scripted(
        [
            [
                "Thought: find the price\nAction: price[tent]",
                "Thought: double it\nAction: calculator[349 * 2]",
                "Thought: I know it\nAction: finish[698]",
            ],
            ["Thought: compute\nAction: calculator[7 * 6]\nObservation: 41 (made up)", "Action: finish[42]"],
            ["I am not sure", "Thought: hmm\nAction: teleport[now]", "Thought: try\nAction: calculator[import os]"],
        ]
    )
    model.questions = questions
    agent = Agent(model, [calculator_tool(SandboxLimits(timeout_s=20)), price], max_steps=3)
    results = agent.run(questions, numeric=True)
    assert [r.answer for r in results[:2]] == ["698", "42"]
    steps = results[0].trace
    assert [s["action"] for s in steps] == ["price", "calculator", "finish"]
    assert steps[0]["observation"] == "349" and steps[1]["observation"] == "698"
    # the model's invented "Observation:" is cut off; the real tool result is what it sees next
    assert results[1].trace[0]["observation"] == "42"
    assert "41" not in str(model.calls[1][0])
    stuck = results[2]
    assert stuck.error and "step limit" in stuck.error and len(stuck.trace) == 3
    assert stuck.trace[0]["observation"].startswith("Invalid format")
    assert stuck.trace[1]["observation"].startswith("Unknown tool 'teleport'")
    assert stuck.trace[2]["observation"].startswith("error:")
    assert len(model.calls) == 3  # lock-step: one batched call per step, finished questions drop out
    assert [len(convs) for convs, _ in model.calls] == [3, 3, 2]
    system = model.calls[0][0][0][0]["content"]
    assert "price[input]: looks up a price in euros" in system and "finish[answer]" in system


def test_registering_tools_and_bad_tool_specs(tmp_path):
    agent = Agent(Scripted([]), [calculator_tool()])

    @tool
    def shout(text):
        """upper-cases text"""
        return text.upper()

    agent.register(shout)
    agent.register(lambda s: len(s), name="length", description="counts characters")
    assert set(agent.tools) == {"calculator", "shout", "length"}
    assert agent.tools["length"]("abc") == "3"
    assert agent.tools["shout"](None).startswith("error: AttributeError")
    with pytest.raises(OdysseyError, match="module:function"):
        load_tool("no_colon_here")
    with pytest.raises(OdysseyError, match="not found"):
        load_tool("missing.py:f", tmp_path)
    with pytest.raises(OdysseyError, match="could not import"):
        load_tool("odyssey_no_such_module_xyz:f")
    with pytest.raises(OdysseyError, match="unique"):
        Agent(Scripted([]), [calculator_tool(), calculator_tool()])
