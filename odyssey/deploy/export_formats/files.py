"""The files of an export: the HF folder (weights or adapter, tokenizer, template, generation config),
the GGUF file with its metadata checked and completed, and the Ollama Modelfile."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from odyssey.errors import OdysseyError

CHECK_EXAMPLES = 20  # examples of the project whose harness prompt the exported template must reproduce

# The adapter's own files (PEFT's and Odyssey's note of the base); the tokenizer is written afresh.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "odyssey-adapter.json")


@dataclass
class ExportTemplate:
    """The chat template written into the export: the task template (task mode) or the model's own."""

    jinja: str | None
    task: object | None  # prompt_template.TaskTemplate in task mode


def chat_template(plan, tokenizer) -> tuple[ExportTemplate, int]:
    """The export's chat template, checked against the harness on the project's examples."""
    from odyssey.deploy.export_formats.prompt_template import check_against_harness, task_template
    from odyssey.prompts import DemoSelector

    if plan.prompt_mode == "chat":
        return ExportTemplate(getattr(tokenizer, "chat_template", None), None), 0
    project = plan.project
    data = project.dataset()
    pool = data.splits.get("train", []) if plan.cfg.shots else []
    selector = DemoSelector(pool, plan.cfg.selection, plan.cfg.shots, plan.cfg.seed)
    from odyssey.data import Example

    template = task_template(tokenizer, plan.cfg, selector(Example("odyssey-export", "")))
    examples = (data.splits.get("test") or data.splits.get("validation") or [])[:CHECK_EXAMPLES]
    checked = 0
    for ex in examples:  # per example, as the harness picks demos per example (fixed: the same unless ex is one)
        checked += check_against_harness(template, tokenizer, plan.cfg, selector(ex), [ex])
    note = (
        f"Odyssey task-mode template for candidate {plan.name}: the last user message is the input, rendered "
        "as in evaluation; system messages replace the candidate's system prompt"
    )
    jinja = template.to_jinja(note)
    _check_jinja(tokenizer, jinja, template, examples)
    return ExportTemplate(jinja, template), checked


def _check_jinja(tokenizer, jinja: str, template, examples) -> None:
    """transformers' own apply_chat_template on the exported Jinja gives the template's text."""
    for ex in examples[:3] or []:
        got = tokenizer.apply_chat_template(
            [{"role": "user", "content": ex.input}], chat_template=jinja, tokenize=False, add_generation_prompt=True
        )
        if got != template.render(ex.input):
            raise OdysseyError(
                f"the exported Jinja template renders differently from the evaluated prompt (example {ex.id})",
                hint="export with --prompt-mode chat; please report this",
            )


def generation_config(plan, tokenizer):
    """transformers' GenerationConfig with the harness's settings for this candidate."""
    from transformers import GenerationConfig

    from odyssey.engines.transformers import generation_kwargs

    settings = plan.settings
    kwargs = {k: v for k, v in generation_kwargs(settings, tokenizer).items() if v is not None and k != "use_cache"}
    if tokenizer.bos_token_id is not None:
        kwargs["bos_token_id"] = tokenizer.bos_token_id
    stops = settings.get("stop")
    if stops:
        kwargs["stop_strings"] = [stops] if isinstance(stops, str) else list(stops)
    return GenerationConfig(**kwargs)


def write_hf(plan, loaded, template: ExportTemplate, out: Path) -> None:
    """The merged checkpoint (or the adapter) + tokenizer with the export's template + generation config."""
    from odyssey.models.checkpoint import save_merged

    tokenizer = loaded.tokenizer
    if plan.adapter:
        for name in ADAPTER_FILES:
            if (plan.folder / name).exists():
                shutil.copy2(plan.folder / name, out / name)
    else:
        save_merged(loaded, out)
        for stale in out.glob("chat_template*"):  # the template comes from the tokenizer below, once
            stale.unlink()
    if template.jinja is not None:
        tokenizer.chat_template = template.jinja
    tokenizer.save_pretrained(out)
    generation_config(plan, tokenizer).save_pretrained(out)


def end_of_turn_id(tokenizer) -> int | None:
    """The token that ends an assistant turn: ChatML's <|im_end|> when the vocabulary has it, else EOS."""
    vocab = tokenizer.get_vocab()
    return vocab.get("<|im_end|>", tokenizer.eos_token_id)


def write_gguf(plan, loaded, template: ExportTemplate, out: Path) -> tuple[Path, list[str]]:
    """The merged checkpoint converted to GGUF, its metadata completed and checked, optionally quantized."""
    from odyssey.models import llamacpp

    work = out / ".hf-work"
    work.mkdir()
    write_hf(replace(plan, adapter=False), loaded, template, work)
    converted = out / ".converted.gguf"
    pre = llamacpp.pre_tokenizer_name(work / "tokenizer.json")
    llamacpp.convert_hf_to_gguf(work, converted, plan.precision, pre_tokenizer=pre)
    shutil.rmtree(work)
    tok = loaded.tokenizer
    final = out / (f"model-{plan.quant}.gguf" if plan.quant else f"model-{plan.precision}.gguf")
    staged = out / ".meta.gguf" if plan.quant else final
    updates = {"general.name": plan.name, "tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": False}
    eot = end_of_turn_id(tok)
    if eot is not None:
        updates["tokenizer.ggml.eot_token_id"] = int(eot)
    if template.jinja is not None:
        updates["tokenizer.chat_template"] = template.jinja
    rewrite_metadata(converted, staged, updates)
    converted.unlink()
    notes = []
    if plan.quant:
        llamacpp.quantize_gguf(staged, final, plan.quant)
        staged.unlink()
        notes.append(f"quantized to {plan.quant}: answers may differ from the evaluated f32 candidate")
    check_metadata(final, template.jinja, tok.eos_token_id, eot)
    return final, notes


def rewrite_metadata(src: Path, dst: Path, updates: dict) -> Path:
    """Copy a GGUF file with some key-value fields set (as gguf-py's gguf_new_metadata.py does).

    The booleans, token ids and strings Odyssey sets are typed here; every other field is copied as read."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys

    kinds = {bool: GGUFValueType.BOOL, int: GGUFValueType.UINT32, str: GGUFValueType.STRING}
    reader = GGUFReader(str(src))
    arch = reader.fields[Keys.General.ARCHITECTURE].contents()
    writer = GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    alignment = reader.fields.get(Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    pending = dict(updates)
    for fld in reader.fields.values():
        if fld.name == Keys.General.ARCHITECTURE or fld.name.startswith("GGUF."):
            continue
        if fld.name in pending:
            value = pending.pop(fld.name)
            writer.add_key_value(fld.name, value, kinds[type(value)])
            continue
        sub_type = fld.types[-1] if fld.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), fld.types[0], sub_type=sub_type)
    for key, value in pending.items():
        writer.add_key_value(key, value, kinds[type(value)])
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return dst


def gguf_fields(path: Path, *keys: str) -> dict:
    """Some key-value fields of a GGUF file, read back with gguf-py's GGUFReader."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    return {k: (fields[k].contents() if k in fields else None) for k in keys}


def check_metadata(path: Path, chat_template: str | None, eos: int | None, eot: int | None) -> None:
    got = gguf_fields(
        path,
        "tokenizer.chat_template",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.add_bos_token",
    )
    want = {
        "tokenizer.chat_template": chat_template,
        "tokenizer.ggml.eos_token_id": eos,
        "tokenizer.ggml.eot_token_id": eot,
        "tokenizer.ggml.add_bos_token": False,
    }
    wrong = {k: (got[k], v) for k, v in want.items() if v is not None and got[k] != v}
    if wrong:
        raise OdysseyError(
            f"the GGUF file's metadata is not what was written: {wrong}",
            hint="this is a bug in the export; please report it with the llama.cpp version",
        )


def stop_texts(tokenizer) -> list[str]:
    """The stop tokens' texts (EOS and the end of turn), for an Ollama ``PARAMETER stop``."""
    ids = [i for i in dict.fromkeys([tokenizer.eos_token_id, end_of_turn_id(tokenizer)]) if i is not None]
    return [tokenizer.convert_ids_to_tokens(i) for i in ids]


def write_modelfile(plan, tokenizer, template: ExportTemplate, gguf: Path, out: Path) -> Path:
    """An Ollama Modelfile that prompts, stops and samples as the harness did."""
    if template.task is None:
        raise OdysseyError(
            "an Ollama Modelfile needs a Go TEMPLATE; Odyssey writes one for the evaluated prompt",
            hint="use --prompt-mode task for --format ollama",
        )
    settings = plan.settings
    lines = [
        f"# Ollama Modelfile for Odyssey candidate {plan.name} (odyssey export --format ollama).",
        "# TEMPLATE is the prompt the candidate was evaluated with, around the user's message.",
        f"FROM ./{gguf.name}",
        f'TEMPLATE """{template.task.to_go()}"""',
    ]
    if plan.cfg.system:
        if '"""' in plan.cfg.system:
            raise OdysseyError(
                'the system prompt contains """, which a Modelfile SYSTEM cannot hold', hint="change prompt.system"
            )
        lines.append(f'SYSTEM """{plan.cfg.system}"""')
    stops = stop_texts(tokenizer) + list(
        [settings["stop"]] if isinstance(settings.get("stop"), str) else settings.get("stop") or []
    )
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    lines.append(f"PARAMETER num_predict {int(settings['max_new_tokens'])}")
    if settings.get("do_sample"):
        lines += [
            f"PARAMETER temperature {settings.get('temperature', 1.0)}",
            f"PARAMETER top_k {settings.get('top_k', 50)}",
            f"PARAMETER top_p {settings.get('top_p', 1.0)}",
        ]
    else:  # greedy, as evaluated; Ollama's default repeat_penalty (1.1) would change greedy answers
        lines += ["PARAMETER temperature 0", "PARAMETER top_k 1"]
    lines.append(f"PARAMETER repeat_penalty {settings.get('repetition_penalty', 1.0)}")
    path = out / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
