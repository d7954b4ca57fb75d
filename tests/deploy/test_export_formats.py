"""odyssey export: the exported HF folder (plain transformers) and GGUF file (stock llama-server with
--jinja, its own chat template) answer as the harness did for a LoRA candidate on tiny:llama; the Ollama
Modelfile's TEMPLATE renders the harness's prompt; wrong requests fail before any work."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from odyssey.errors import OdysseyError
from tests.conftest import tiny_project
from tests.engines.test_engines import _lora_candidate, needs_llama_server

NAME = "tiny-llama:lora"
MAX_NEW = 16


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny project with a LoRA candidate (non-zero B) scored by the harness on its test split."""
    from odyssey.evaluate import evaluate_candidate
    from odyssey.project import Project
    from odyssey.prompts import PromptConfig

    tmp = tmp_path_factory.mktemp("export")
    project = Project.load(tiny_project(tmp / "proj"))
    lora = _lora_candidate(tmp)
    scope = project.spec.scope
    cfg = PromptConfig.default(scope.task, scope.labels, generation={"max_new_tokens": MAX_NEW})
    base_id = project.store.upsert_candidate("tiny-llama:zero-shot", "select", "tiny:llama", {"prompt": cfg.as_dict()})
    project.store.upsert_candidate(
        NAME,
        "adapt",
        str(lora),
        {
            "prompt": cfg.as_dict(),
            "method": "lora",
            "base": "tiny:llama",
            "data": project.dataset().fingerprint,
            "data_hash": "ab" * 32,
            "train": {"learning_rate": 2e-4, "max_steps": 30},
        },
        base_id,
    )
    result = evaluate_candidate(project, candidate=NAME, split="test", engine="transformers")
    rows = project.store.outputs(result.run_id)
    inputs = {ex.id: ex.input for ex in project.dataset().split("test")}
    answers = [(inputs[r["example_id"]], r["prediction"]) for r in rows]
    assert len({a for _, a in answers}) > 1 and all(a.strip() for _, a in answers)  # real, varied answers
    return project, answers, tmp


def test_hf_export_loads_in_plain_transformers_and_answers_as_evaluated(evaluated):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from odyssey.deploy.export_formats import export_candidate

    project, answers, tmp = evaluated
    out = tmp / "hf"
    result = export_candidate(project, NAME, "hf", out)
    assert result.checked_examples == len(project.dataset().split("test"))
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", "tokenizer.json"} <= set(
        result.files
    )
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generation_config.max_new_tokens == MAX_NEW and model.generation_config.do_sample is False
    assert tok.eos_token_id in model.generation_config.eos_token_id
    got = []
    for text, _ in answers:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        new = model.generate(**ids)[0, ids["input_ids"].shape[1] :]
        got.append(tok.decode(new, skip_special_tokens=True).strip())
    assert got == [a for _, a in answers]


def test_model_card_has_metrics_gates_lineage_data_and_license(evaluated):
    project, _, tmp = evaluated
    text = (tmp / "hf" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    od = meta["odyssey"]
    stored = project.store.latest_metrics(project.store.candidate(NAME)["id"], "test")
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["rougeL"] == pytest.approx(stored["rougeL"], abs=1e-4)
    assert [g["gate"] for g in od["gates"]] == [str(g) for g in project.spec.scope.gate_list()]
    assert [c["candidate"] for c in od["lineage"]] == [NAME, "tiny-llama:zero-shot"]
    assert od["lineage"][-1]["model_ref"] == "tiny:llama" and od["base_model_ref"] == "tiny:llama"
    assert od["data_sha256"] == project.dataset().fingerprint and od["method"] == "lora"
    assert od["settings"]["train"]["max_steps"] == 30 and meta["license"] == "unknown"  # tiny models have none
    assert "## Lineage" in text and "rougeL" in text


def test_adapter_export_loads_with_peft(evaluated):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from odyssey.deploy.export_formats import export_candidate
    from odyssey.models.loading import resolve

    project, answers, tmp = evaluated
    out = tmp / "adapter"
    export_candidate(project, NAME, "hf", out, adapter=True)
    assert (out / "adapter_config.json").exists() and not (out / "config.json").exists()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve("tiny:llama")), out)
    tok = AutoTokenizer.from_pretrained(out)
    text, expected = answers[0]
    ids = tok.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    settings = GenerationConfig.from_pretrained(out)  # the adapter folder's, not the base's
    new = model.generate(**ids, generation_config=settings)[0, ids["input_ids"].shape[1] :]
    assert tok.decode(new, skip_special_tokens=True).strip() == expected


@needs_llama_server
def test_gguf_served_by_stock_llama_server_answers_as_evaluated(evaluated):
    import httpx

    from odyssey.deploy.export_formats import export_candidate
    from odyssey.deploy.export_formats.files import gguf_fields
    from odyssey.engines.llamacpp import server_command
    from odyssey.engines.process import ManagedServer
    from odyssey.models.llamacpp import tool_path

    project, answers, tmp = evaluated
    out = tmp / "gguf"
    export_candidate(project, NAME, "gguf", out)
    gguf = out / "model-f32.gguf"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp / "hf")
    fields = gguf_fields(
        gguf,
        "tokenizer.chat_template",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.add_bos_token",
    )
    assert fields == {
        "tokenizer.chat_template": tok.chat_template,
        "tokenizer.ggml.eos_token_id": tok.eos_token_id,
        "tokenizer.ggml.eot_token_id": tok.eos_token_id,
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.add_bos_token": False,
    }
    binary = tool_path("llama-server", build=False)
    server = ManagedServer(
        lambda port, key: server_command(binary, gguf, port, key, context=2048, extra=("--jinja",)),
        name="llama-server",
    )
    with server, httpx.Client(base_url=server.base_url, headers=server.headers, timeout=120) as client:
        got = []
        for text, _ in answers:
            reply = client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": MAX_NEW},
            )
            assert reply.status_code == 200, reply.text
            got.append(reply.json()["choices"][0]["message"]["content"].strip())
    assert got == [a for _, a in answers]


# ---- the Modelfile's TEMPLATE, rendered with Go text/template semantics -------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_go_template(template: str, data: dict) -> str:
    """The text/template constructs the export uses: {{ .Field }}, {{ if .Field }} / {{ else }} / {{ end }}
    (empty string false), with {{- and -}} trimming the neighbouring whitespace."""
    parts, pos = [], 0
    for m in _ACTION.finditer(template):
        parts.append(("text", template[pos : m.start()]))
        parts.append(("action", m.group(2), bool(m.group(1)), bool(m.group(3))))
        pos = m.end()
    parts.append(("text", template[pos:]))
    for i, part in enumerate(parts):  # trim markers act on the literal text beside them
        if part[0] == "action" and part[2] and parts[i - 1][0] == "text":
            parts[i - 1] = ("text", parts[i - 1][1].rstrip())
        if part[0] == "action" and part[3] and parts[i + 1][0] == "text":
            parts[i + 1] = ("text", parts[i + 1][1].lstrip())
    out, stack = [], []  # stack of "is this branch emitting"
    for part in parts:
        live = all(stack)
        if part[0] == "text":
            out.append(part[1] if live else "")
            continue
        words = part[1].split()
        if words[0] == "if":
            stack.append(bool(data.get(words[1].lstrip("."), "")))
        elif words[0] == "else":
            stack[-1] = not stack[-1]
        elif words[0] == "end":
            stack.pop()
        elif words[0].startswith(".") and live:
            out.append(str(data.get(words[0][1:], "")))
        elif not words[0].startswith("."):
            raise AssertionError(f"unsupported Go template action {part[1]!r}")
    assert not stack, "unclosed {{ if }}"
    return "".join(out)


def test_go_renderer_semantics():
    template = "a{{ if .S }}[{{ .S }}]{{ else }}-{{ end }}b {{- .P -}} c"
    assert render_go_template(template, {"S": "x", "P": "p"}) == "a[x]bpc"
    assert render_go_template("{{ if .S }}[{{ .S }}]{{ else }}-{{ end }}", {"S": ""}) == "-"


@needs_llama_server
def test_modelfile_template_reproduces_the_harness_prompt(evaluated):
    from odyssey.deploy.export_formats import export_candidate
    from odyssey.models import load
    from odyssey.prompts import PromptConfig, render_text

    project, answers, tmp = evaluated
    out = tmp / "ollama"
    export_candidate(project, NAME, "ollama", out)
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-f32.gguf" in modelfile
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    assert 'PARAMETER stop "</s>"' in modelfile and f"PARAMETER num_predict {MAX_NEW}" in modelfile
    assert "PARAMETER temperature 0" in modelfile and "PARAMETER repeat_penalty 1.0" in modelfile
    cfg = PromptConfig.from_dict(project.store.candidate(NAME)["config"]["prompt"])
    tok = load("tiny:llama").tokenizer
    for ex in project.dataset().split("test"):
        assert render_go_template(template, {"Prompt": ex.input, "System": ""}) == render_text(tok, cfg, ex, [])
    with_system = PromptConfig.from_dict({**cfg.as_dict(), "system": "Be brief."})
    ex = project.dataset().split("test")[0]
    assert render_go_template(template, {"Prompt": ex.input, "System": "Be brief."}) == render_text(
        tok, with_system, ex, []
    )


# ---- refused before any work ---------------------------------------------------------------------


def test_bad_requests_fail_before_any_work(evaluated, tmp_path):
    from odyssey.deploy.export_formats import plan_export

    project, _, _ = evaluated
    with pytest.raises(OdysseyError, match="no candidate named 'nope'"):
        plan_export(project, "nope", "hf", tmp_path / "a")
    with pytest.raises(OdysseyError, match="unknown export format 'onnx'"):
        plan_export(project, NAME, "onnx", tmp_path / "a")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("keep me")
    with pytest.raises(OdysseyError, match="already exists and is not an empty folder") as err:
        plan_export(project, NAME, "hf", full)
    assert "--force" in err.value.hint and (full / "x.txt").read_text() == "keep me"
    with pytest.raises(OdysseyError, match="--quant applies to GGUF"):
        plan_export(project, NAME, "hf", tmp_path / "a", quant="q8_0")
    assert not (tmp_path / "a").exists()


def _soft_prompt_candidate(project, tmp_path) -> str:
    from peft import PromptTuningConfig, get_peft_model

    from odyssey.models import load

    base = load("tiny:llama")
    model = get_peft_model(base.model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    out = tmp_path / "soft"
    model.save_pretrained(out)
    base.tokenizer.save_pretrained(out)
    (out / "odyssey-adapter.json").write_text(json.dumps({"base": "tiny:llama"}))
    project.store.upsert_candidate("tiny-llama:prompt_tuning", "adapt", str(out), {"method": "prompt_tuning"})
    return "tiny-llama:prompt_tuning"


def test_soft_prompt_to_gguf_or_ollama_is_refused(evaluated, tmp_path):
    from odyssey.deploy.export_formats import plan_export

    project, _, _ = evaluated
    name = _soft_prompt_candidate(project, tmp_path)
    for fmt in ("gguf", "ollama"):
        with pytest.raises(OdysseyError, match=r"cannot export tiny-llama:prompt_tuning as .*soft-prompt") as err:
            plan_export(project, name, fmt, tmp_path / "x")
        assert "--format hf --adapter" in err.value.hint
    with pytest.raises(OdysseyError, match="cannot be merged"):
        plan_export(project, name, "hf", tmp_path / "x")
    assert plan_export(project, name, "hf", tmp_path / "x", adapter=True).kind == "prompt_tuning"


def test_per_input_few_shot_is_refused_in_task_mode(evaluated, tmp_path):
    from odyssey.deploy.export_formats import plan_export
    from odyssey.prompts import PromptConfig

    project, _, _ = evaluated
    cfg = PromptConfig.default("summarization", shots=2, selection="similar")
    project.store.upsert_candidate("tiny-llama:2-shot", "prompt", "tiny:llama", {"prompt": cfg.as_dict()})
    with pytest.raises(OdysseyError, match="chosen per input") as err:
        plan_export(project, "tiny-llama:2-shot", "gguf", tmp_path / "x")
    assert "--prompt-mode chat" in err.value.hint
    assert plan_export(project, "tiny-llama:2-shot", "hf", tmp_path / "x", prompt_mode="chat").cfg.shots == 2


def test_cli_mistakes_exit_2_with_a_message_and_no_traceback(tmp_path):
    import subprocess
    import sys

    root = tiny_project(tmp_path / "proj")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "odyssey.cli",
            "export",
            "nope",
            "--format",
            "hf",
            "--to",
            str(tmp_path / "out"),
            "-p",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "no candidate named 'nope'" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()
