"""Export parity on DialogSum: a LoRA candidate exported as HF and GGUF answers as the harness did.

    flock /tmp/odyssey-heavy.lock timeout 1500 .venv/bin/python benchmarks/export.py [--workdir /tmp/odyssey-export] \
        [--steps 30] [--n 20]

Builds a project outside the repository (the DialogSum license forbids copying it in), as
benchmarks/finetune_dialogsum.py does: train = the first 400 rows of ../shared/data/dialogsum/dialogsum.dev.jsonl,
validation = rows 384-399, test = rows 400-419. A LoRA on packaged SmolLM2-135M-Instruct trains for a few steps,
``odyssey eval`` scores it on test with the transformers engine (greedy, max_new_tokens 60; its answers go to the
store), and ``odyssey export`` writes it as ``--format hf`` and ``--format ollama`` (the GGUF file plus Modelfile;
the same GGUF that ``--format gguf`` writes). Then:

* export_parity_hf: plain transformers (AutoModelForCausalLM, AutoTokenizer.apply_chat_template with the raw
  dialogue as the user message, generate with the exported generation_config) gives the stored answer;
* export_parity_gguf: stock llama-server started with --jinja (the file's own chat template and stop tokens),
  /v1/chat/completions with the raw dialogue, temperature 0, gives the stored answer.

Both are the fraction of identical answers (after strip, as the harness stores them). Writes
benchmarks/results/export.json with the Modelfile and the model card's text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "export.json"
MAX_NEW = 60

SPEC = """# DialogSum export parity (benchmarks/export.py); not shipped
name: dialogsum-export
version: 1
scope:
  task: summarization
  data:
    source: {train: data/train.jsonl, validation: data/validation.jsonl, test: data/test.jsonl}
    fields: {input: dialogue, target: summary, id: fname}
  metrics: [rouge1, rouge2, rougeL]
  gates:
    rougeL: ">= 0.30"
models:
  - packaged:smollm2-135m-instruct
evaluate:
  batch_size: 8
  generation: {max_new_tokens: 60}
adapt:
  method: lora
  epochs: 1
  max_seq_len: 512
  keep_best: false
  save_every: 100
  eval_splits: [test]
"""


def make_project(workdir: Path, n_test: int):
    data = workdir / "data"
    if not (data / "test.jsonl").exists():
        rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
        data.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", rows[:400]), ("validation", rows[384:400]), ("test", rows[400 : 400 + n_test])):
            (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (workdir / "odyssey.yaml").write_text(SPEC)
    from odyssey.project import Project

    return Project.load(workdir)


def hf_answers(folder: Path, inputs: list[str]) -> list[str]:
    """Plain transformers on the exported folder, one request at a time, as a user would run it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    answers = []
    with torch.inference_mode():
        for text in inputs:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            new = model.generate(**ids)[0, ids["input_ids"].shape[1] :]
            answers.append(tok.decode(new, skip_special_tokens=True).strip())
    return answers


def gguf_answers(gguf: Path, inputs: list[str]) -> list[str]:
    """Stock llama-server with --jinja: the GGUF's own chat template, EOS/EOT tokens; greedy."""
    import httpx

    from odyssey.engines.llamacpp import server_command
    from odyssey.engines.process import ManagedServer
    from odyssey.models.llamacpp import tool_path

    binary = tool_path("llama-server", build=False)
    server = ManagedServer(
        lambda port, key: server_command(binary, gguf, port, key, context=4096, extra=("--jinja",)),
        name="llama-server",
    )
    answers = []
    with server, httpx.Client(base_url=server.base_url, headers=server.headers, timeout=600) as client:
        for text in inputs:
            reply = client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": MAX_NEW},
            )
            reply.raise_for_status()
            answers.append(reply.json()["choices"][0]["message"]["content"].strip())
    return answers


def parity(name: str, expected: list[str], got: list[str]) -> dict:
    same = [e == g for e, g in zip(expected, got)]
    return {
        f"export_parity_{name}": sum(same) / len(same),
        f"{name}_identical": sum(same),
        f"{name}_n": len(same),
        f"{name}_differences": [
            {"row": i, "harness": e, "export": g} for i, (e, g, s) in enumerate(zip(expected, got, same)) if not s
        ][:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="/tmp/odyssey-export")
    parser.add_argument("--steps", type=int, default=30, help="LoRA training steps")
    parser.add_argument("--n", type=int, default=20, help="test rows (400 to 400+n-1)")
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared DialogSum file")
    from odyssey.adapt import finetune
    from odyssey.deploy.export_formats import export_candidate
    from odyssey.evaluate import evaluate_candidate

    workdir = Path(args.workdir)
    project = make_project(workdir, args.n)
    timings, started = {}, time.perf_counter()
    trained = finetune(project, method="lora", max_steps=args.steps, epochs=10.0, evaluate=False)
    timings["train_s"] = round(time.perf_counter() - started, 1)
    t0 = time.perf_counter()
    result = evaluate_candidate(project, candidate=trained.candidate, split="test", engine="transformers")
    timings["harness_s"] = round(time.perf_counter() - t0, 1)
    by_id = {r["example_id"]: r["prediction"] for r in project.store.outputs(result.run_id)}
    examples = project.dataset().split("test")
    inputs, expected = [ex.input for ex in examples], [by_id[ex.id] for ex in examples]
    t0 = time.perf_counter()
    hf = export_candidate(project, trained.candidate, "hf", workdir / "export-hf", force=True)
    ollama = export_candidate(project, trained.candidate, "ollama", workdir / "export-ollama", force=True)
    timings["export_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    got_hf = hf_answers(hf.path, inputs)
    timings["hf_generate_s"] = round(time.perf_counter() - t0, 1)
    gguf = next(ollama.path.glob("*.gguf"))
    t0 = time.perf_counter()
    got_gguf = gguf_answers(gguf, inputs)
    timings["gguf_generate_s"] = round(time.perf_counter() - t0, 1)
    out = {
        "command": "python benchmarks/export.py " + " ".join(sys.argv[1:]),
        "model": "packaged:smollm2-135m-instruct",
        "candidate": trained.candidate,
        "method": "lora",
        "train_steps": trained.steps,
        "train_rows": "0-399",
        "test_rows": f"400-{399 + args.n}",
        "max_new_tokens": MAX_NEW,
        "harness_engine": "transformers (f32, batched greedy)",
        "gguf": gguf.name,
        "llama_server": "stock llama-server --jinja, /v1/chat/completions, temperature 0",
        "harness_rougeL": round(result.metrics.get("rougeL", 0.0), 4),
        "checked_prompts": hf.checked_examples,
        **parity("hf", expected, got_hf),
        **parity("gguf", expected, got_gguf),
        "timings_s": timings,
        "modelfile": (ollama.path / "Modelfile").read_text(),
        "model_card": (hf.path / "README.md").read_text(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k.startswith("export_parity") or k == "timings_s"}))


if __name__ == "__main__":
    main()
