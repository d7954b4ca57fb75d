import pytest

from odyssey.errors import SpecError
from odyssey.project import Project, check_project, check_spec_file
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
        spec, report = check_project(root / "odyssey.yaml")  # data sample and model refs included
        assert report.ok, [str(p) for p in report.problems]
        assert report.notes and "rows" in report.notes[0]
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
    bad = (
        GOOD.replace("  task: summarization", "  task: sumarization")
        .replace('rougeL: ">= 0.30"', 'rougeL: ">= abc"')
        .replace("  gates:", "  metrcs: [rougeL]\n  gates:")
    )
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


@pytest.mark.parametrize(
    "expr,value,expected",
    [(">= 0.3", 0.3, True), ("> 0.3", 0.3, False), ("<= 800", 801, False), ("== 1", 1.0, True), (0.25, 0.3, True)],
)
def test_gate_semantics(expr, value, expected):
    assert Gate.parse("rougeL", expr).passes(value) is expected


def test_bare_number_gate_on_latency_is_upper_bound():
    assert Gate.parse("p95_latency_ms", 800).op == "<="


def _uncommented_defaults(text: str) -> str:
    from odyssey.scaffold import DEFAULTS_BANNER

    _, banner, block = text.partition(DEFAULTS_BANNER)
    assert banner, "odyssey init writes the default sections after a banner"
    return "\n".join(line[2:] for line in block.splitlines() if line.startswith("# "))


@pytest.mark.parametrize("task", ["summarization", "classification", "qa"])
def test_init_writes_every_section_at_the_specs_defaults(tmp_path, task):
    import yaml

    from odyssey.scaffold import DEFAULT_SECTIONS, NO_COMMENT, init_project
    from odyssey.spec import Spec

    root = init_project(tmp_path / "p", task)
    text = (root / "odyssey.yaml").read_text()
    block = _uncommented_defaults(text)
    written = yaml.safe_load(block)
    assert list(written) == list(DEFAULT_SECTIONS) == ["select", "adapt", "align", "optimize", "deploy", "augment"]
    for name in DEFAULT_SECTIONS:
        default = Spec.model_fields[name].get_default(call_default_factory=True)
        assert type(default).model_validate(written[name]) == default, name

    # Every setting of every section is written, nested ones included, each with a comment of its own.
    def keys(d, prefix=""):
        for k, v in d.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")

    expected = set(
        keys(
            {
                n: Spec.model_fields[n].get_default(call_default_factory=True).model_dump(mode="json")
                for n in DEFAULT_SECTIONS
            }
        )
    )
    assert set(keys(written)) == expected
    assert "adapt.learning_rate" in expected
    for line in block.splitlines():
        assert " # " in line and NO_COMMENT not in line, f"no comment: {line!r}"
    # Uncommenting the whole block gives the same spec as leaving it commented.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "odyssey.yaml").write_text(text.partition("# ----")[0] + block + "\n")
    (tmp_path / "full" / "data").symlink_to(root / "data")
    assert Project.load(tmp_path / "full").spec == Project.load(root).spec


def test_appending_a_section_to_an_init_project_still_works(tmp_path):
    from odyssey.scaffold import init_project

    root = init_project(tmp_path / "p")
    spec_path = root / "odyssey.yaml"
    spec_path.write_text(spec_path.read_text() + "adapt:\n  learning_rate: 0.01\n")
    assert Project.load(root).spec.adapt.learning_rate == 0.01


def test_spec_file_that_is_not_utf8_is_a_problem_not_a_traceback(tmp_path):
    path = tmp_path / "odyssey.yaml"
    path.write_bytes(GOOD.replace("name: demo", "name: d\xe9mo").encode("latin-1"))
    spec, report = check_spec_file(path)
    assert spec is None and "not UTF-8" in report.problems[0].message
    assert "byte offset 7" in report.problems[0].message and report.problems[0].line == 1


def test_complex_yaml_keys_are_a_problem(tmp_path):
    path = write_spec(tmp_path, "? [a, b]\n: 1\nname: x\n")
    spec, report = check_spec_file(path)
    assert spec is None and "plain name" in report.problems[0].message


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_YAMLISH = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            list("name: scope{}[]-?&*!|>'\"#,\n\t %@`\\x0") + ["task", "data", "source", "models", "1", "null", "\n  "]
        ),
        max_size=60,
    ).map(lambda parts: "".join(parts).encode()),
    st.builds(lambda cut, junk: GOOD.encode()[:cut] + junk, st.integers(0, len(GOOD)), st.binary(max_size=20)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_YAMLISH)
def test_spec_loader_on_random_bytes_reports_problems_never_crashes(tmp_path, content):
    path = tmp_path / "odyssey.yaml"
    path.write_bytes(content)
    spec, report = check_spec_file(path)  # must not raise
    assert (spec is None) == (not report.ok)
    for problem in report.problems:
        assert str(problem)
    if spec is None:
        with pytest.raises(SpecError):
            Project.load(tmp_path)
