from pathlib import Path

import pytest

from odyssey.errors import SpecError
from odyssey.project import Project, check_spec_file
from odyssey.spec import Gate
from tests.conftest import write_spec

GOOD = """\
name: demo
scope:
  task: summarization
  data:
    source: data.jsonl
    fields: {input: dialogue, target: [summary1, summary2]}
  gates:
    rougeL: ">= 0.30"
    p95_latency_ms: "<= 800"
  constraints:
    memory_gb: 2
models:
  - packaged:smollm2-135m-instruct
"""


def test_shipped_templates_validate(tmp_path):
    from odyssey.scaffold import EXAMPLES, init_project

    for task in EXAMPLES:
        root = init_project(tmp_path / task, task)
        spec, report = check_spec_file(root / "odyssey.yaml")
        assert report.ok, [str(p) for p in report.problems]
        assert spec.scope.task == task
        assert (root / "odyssey.yaml").read_text().startswith("# Run: ")


def test_good_spec_loads_and_parses_gates(tmp_path):
    write_spec(tmp_path, GOOD)
    (tmp_path / "data.jsonl").write_text("")
    project = Project.load(tmp_path)
    gates = {g.metric: g for g in project.spec.scope.gate_list()}
    assert str(gates["rougeL"]) == "rougeL >= 0.3"
    assert gates["p95_latency_ms"].passes(700) and not gates["p95_latency_ms"].passes(900)
    assert gates["memory_gb"].op == "<=" and gates["memory_gb"].threshold == 2  # constraint becomes a gate
    assert project.spec.scope.metric_names == ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def test_every_problem_reported_with_line_field_value_and_hint(tmp_path):
    bad = GOOD.replace("  task: summarization", "  task: sumarization").replace(
        'rougeL: ">= 0.30"', 'rougeL: ">= abc"').replace("  gates:", "  metrcs: [rougeL]\n  gates:")
    path = write_spec(tmp_path, bad)
    spec, report = check_spec_file(path)
    assert spec is None
    text = {p.field: p for p in report.problems}
    task = text["scope.task"]
    assert task.line == 3 and task.value == "sumarization" and "summarization" in task.hint
    unknown = text["scope.metrcs"]
    assert unknown.line == 7 and "did you mean 'metrics'" in unknown.hint
    gate = text["scope.gates"]
    assert "'<op> <number>'" in gate.message
    assert len(report.problems) >= 3
    with pytest.raises(SpecError) as exc:
        Project.load(tmp_path)
    assert "odyssey.yaml:3 scope.task" in str(exc.value)


def test_missing_data_file_and_yaml_syntax(tmp_path):
    path = write_spec(tmp_path, GOOD)
    _, report = check_spec_file(path)
    assert [p.field for p in report.problems] == ["scope.data.source"]
    assert report.problems[0].value == "data.jsonl" and report.problems[0].line == 5
    write_spec(tmp_path, "name: x\nscope: [unclosed\n")
    _, report = check_spec_file(path)
    assert "not valid YAML" in report.problems[0].message and report.problems[0].line


def test_duplicate_key_and_unknown_top_level(tmp_path):
    path = write_spec(tmp_path, GOOD + "modles: []\n")
    _, report = check_spec_file(path)
    assert any(p.field == "modles" and "did you mean 'models'" in p.hint for p in report.problems)
    write_spec(tmp_path, GOOD + "name: again\n")
    _, report = check_spec_file(path)
    assert report.problems[0].message == "key appears twice" and report.problems[0].line == 14


@pytest.mark.parametrize("expr,value,expected", [(">= 0.3", 0.3, True), ("> 0.3", 0.3, False), ("<= 800", 801, False),
                                                 ("== 1", 1.0, True), (0.25, 0.3, True)])
def test_gate_semantics(expr, value, expected):
    assert Gate.parse("rougeL", expr).passes(value) is expected


def test_bare_number_gate_on_latency_is_upper_bound():
    assert Gate.parse("p95_latency_ms", 800).op == "<="
