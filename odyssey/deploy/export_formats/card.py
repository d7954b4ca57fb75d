"""The exported model card: README.md with YAML metadata (Hugging Face's model-card fields plus an
``odyssey`` block) and a short body: metrics against the gates, lineage, data, method and settings, the
prompt, how to load it. Everything comes from the run store and the candidate's config."""

from __future__ import annotations

from pathlib import Path

LOADERS = {
    "hf": (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(PATH)\nmodel = AutoModelForCausalLM.from_pretrained(PATH)\n"
        'ids = tok.apply_chat_template([{"role": "user", "content": INPUT}], add_generation_prompt=True,\n'
        '                              return_tensors="pt", return_dict=True)\n'
        "out = model.generate(**ids)  # generation_config.json: greedy, the evaluated max_new_tokens and stops\n"
        'print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))\n```'
    ),
    "adapter": (
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "base = AutoModelForCausalLM.from_pretrained(BASE)\nmodel = PeftModel.from_pretrained(base, PATH)\n"
        "tok = AutoTokenizer.from_pretrained(PATH)\n```"
    ),
    "gguf": "```bash\nllama-server -m PATH/GGUF --jinja   # the file's own chat template and stop tokens\n```",
    "ollama": "```bash\nollama create NAME -f PATH/Modelfile && ollama run NAME\n```",
}


def lineage(store, row: dict) -> list[dict]:
    """The candidate, its parent, ... back to the base model (the root's model reference)."""
    chain, seen = [], set()
    while row is not None and row["id"] not in seen:
        seen.add(row["id"])
        chain.append(
            {
                "candidate": row["name"],
                "stage": row["stage"],
                "method": row["config"].get("method"),
                "model_ref": row["model_ref"],
            }
        )
        row = store.candidate(row["parent_id"]) if row["parent_id"] is not None else None
    return chain


def base_model(plan, chain: list[dict]) -> str:
    return plan.row["config"].get("base") or chain[-1]["model_ref"]


def card_metadata(plan, template, checked: int) -> dict:
    from odyssey.evaluate import check_gates
    from odyssey.models import describe

    project, row = plan.project, plan.row
    store, scope = project.store, project.spec.scope
    metrics = store.latest_metrics(row["id"], "test")
    gates = check_gates(scope, metrics)
    chain = lineage(store, row)
    base = base_model(plan, chain)
    try:
        info = describe(base, project.root)
        license_, card = info.license, info.card or {}
    except Exception:  # an offline hub id or a moved folder: the card says unknown rather than failing
        license_, card = None, {}
    config = row["config"]
    return {
        "license": license_ or "unknown",
        "base_model": card.get("base_model") or base,
        "library_name": "peft" if plan.adapter else ("transformers" if plan.format == "hf" else "gguf"),
        "pipeline_tag": "text-generation",
        "tags": ["odyssey", scope.task, config.get("method") or row["stage"], plan.format],
        "model-index": [
            {
                "name": row["name"],
                "results": [
                    {
                        "task": {"type": scope.task},
                        "dataset": {"name": project.spec.name, "type": "custom", "split": "test"},
                        "metrics": [
                            {"type": k, "name": k, "value": round(v, 4)}
                            for k, v in metrics.items()
                            if k in scope.metric_names
                        ],
                    }
                ],
            }
        ],
        "odyssey": {
            "candidate": row["name"],
            "project": project.spec.name,
            "format": plan.format,
            "prompt_mode": plan.prompt_mode,
            "method": config.get("method") or row["stage"],
            "data_sha256": config.get("data"),
            "train_data_hash": config.get("data_hash"),
            "gates": [{"gate": g["gate"], "value": g["value"], "passed": g["passed"]} for g in gates],
            "lineage": chain,
            "base_model_ref": base,
            "base_license": license_,
            "settings": {k: config[k] for k in ("train", "adapt", "trainable_params", "total_params") if k in config},
            "prompt": plan.cfg.as_dict(),
            "generation": plan.settings,
            "checked_examples": checked,
            "gguf": {"precision": plan.precision, "quant": plan.quant} if plan.format != "hf" else None,
        },
    }


def _body(plan, meta: dict, template) -> str:
    od = meta["odyssey"]
    lines = [
        f"# {plan.name}",
        "",
        f"Exported by Odyssey from project `{od['project']}` as **{plan.format}**"
        f"{' (PEFT adapter)' if plan.adapter else ''}; method **{od['method']}**, "
        f"base model `{od['base_model_ref']}` (license: {meta['license']}).",
        "",
        "## Metrics on the test split, against the gates",
        "",
        "| gate | value | passed |",
        "|---|---|---|",
    ]
    for g in od["gates"]:
        value = "not measured" if g["value"] is None else f"{g['value']:.4f}"
        passed = {True: "yes", False: "no"}.get(g["passed"], "-")
        lines.append(f"| `{g['gate']}` | {value} | {passed} |")
    lines += ["", "## Lineage", ""]
    lines += [
        f"{i + 1}. `{c['candidate']}` ({c['stage']}{', ' + c['method'] if c['method'] else ''}): `{c['model_ref']}`"
        for i, c in enumerate(od["lineage"])
    ]
    lines += ["", "## Data", "", f"- evaluation/training data sha256 (all splits): `{od['data_sha256']}`"]
    if od["train_data_hash"]:  # training.sft.data_hash: a sha256 prefix over the tokenized examples
        lines.append(f"- tokenized training data hash: `{od['train_data_hash']}`")
    lines += ["", "## Prompt", ""]
    if template.task is not None:
        lines += [
            f"Task mode: the chat template wraps the user's message in the prompt the candidate was evaluated "
            f"with ({od['checked_examples']} examples of the project checked against the harness's rendering). "
            "Send the raw input as the only user message; a system message replaces the candidate's system "
            "prompt; earlier turns are not used (the candidate was evaluated single-turn).",
            "",
            f"- instruction: {plan.cfg.instruction!r}",
            f"- system: {plan.cfg.system!r}",
            f"- shots: {plan.cfg.shots} ({plan.cfg.selection})",
        ]
    else:
        lines.append("Chat mode: the model's own chat template; render the task prompt yourself.")
    lines += ["", "## Load it", "", LOADERS["adapter" if plan.adapter else plan.format]]
    return "\n".join(lines) + "\n"


def write_card(plan, tokenizer, template, checked: int, out: Path) -> Path:
    import yaml

    meta = card_metadata(plan, template, checked)
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120) + "---\n\n"
    path = out / "README.md"
    path.write_text(text + _body(plan, meta, template), encoding="utf-8")
    return path
