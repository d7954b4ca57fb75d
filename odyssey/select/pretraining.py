"""Pretraining from scratch (``odyssey pretrain --objective clm|mlm|span --size tiny``).

corpus -> tokenizer trained on it (``tokenizers`` BPE or Unigram) -> packed blocks of ``seq_len`` tokens
-> a model built from a config preset (Llama for clm, BERT for mlm, T5 for span) -> THE training loop
(:func:`odyssey.training.train`, with checkpoints and ``--resume``) -> validation loss and perplexity
curves, a sample, a report -> a candidate in the store whose ``model_ref`` is the saved checkpoint, so
the adapt stage can fine-tune it like any other model.

``init_from`` continues pretraining an existing model (its tokenizer and architecture) on domain text
through the same path. Under ``accelerate launch`` / ``torchrun`` the loop runs data-parallel.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError

N_SENTINELS = 32
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"] + [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
FAMILY = {"clm": "llama", "mlm": "bert", "span": "t5"}

# Model shapes are data: (hidden, layers, heads, feed-forward). tiny/mini/small train on a CPU; the
# larger ones are configs for GPU users (about 125M, 350M and 1B parameters at a 32k vocabulary).
PRESETS = {
    "tiny": (64, 2, 4, 256),
    "mini": (128, 4, 4, 512),
    "small": (256, 6, 8, 1024),
    "125m": (768, 12, 12, 3072),
    "350m": (1024, 24, 16, 4096),
    "1b": (2048, 16, 32, 8192),
}


def model_config(objective: str, size: str, vocab_size: int, seq_len: int, ids: dict):
    from transformers import AutoConfig

    if size not in PRESETS:
        raise OdysseyError(f"unknown size preset {size!r}", hint=f"use one of {', '.join(PRESETS)}")
    hidden, layers, heads, ff = PRESETS[size]
    if objective == "clm":
        return AutoConfig.for_model(
            "llama",
            hidden_size=hidden,
            intermediate_size=ff,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=max(seq_len, 512),
            vocab_size=vocab_size,
            tie_word_embeddings=True,
            architectures=["LlamaForCausalLM"],
            **ids,
        )
    if objective == "mlm":
        return AutoConfig.for_model(
            "bert",
            hidden_size=hidden,
            intermediate_size=ff,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=max(seq_len, 512),
            vocab_size=vocab_size,
            architectures=["BertForMaskedLM"],
            pad_token_id=ids["pad_token_id"],
        )
    return AutoConfig.for_model(
        "t5",
        d_model=hidden,
        d_ff=ff,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        d_kv=hidden // heads,
        vocab_size=vocab_size,
        architectures=["T5ForConditionalGeneration"],
        decoder_start_token_id=ids["pad_token_id"],
        **ids,
    )


def train_tokenizer(texts: list[str], kind: str, vocab_size: int, out: Path):
    """A byte-level BPE or a Unigram tokenizer trained on the corpus, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False
        )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=SPECIALS[5:],
        model_max_length=4096,
    )
    fast.save_pretrained(out)
    return fast


def pack(texts: list[str], tokenizer, seq_len: int) -> list[list[int]]:
    """Concatenate documents (each ended by EOS) and cut into blocks of ``seq_len`` tokens."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


@dataclass
class PretrainResult:
    run_id: int
    candidate: str
    objective: str
    size: str
    model_path: str
    n_params: int
    tokens: int
    steps: int
    wall_s: float
    val_loss: float
    val_perplexity: float
    curve: list[dict]
    sample: str
    report: str
    resumed_from: int | None = None
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _collator(objective: str, tokenizer, seed: int):
    from odyssey.select.objectives import CausalCollator, MaskedCollator, SpanCollator

    if objective == "clm":
        return CausalCollator()
    if objective == "mlm":
        return MaskedCollator(tokenizer.mask_token_id, len(tokenizer), set(tokenizer.all_special_ids), seed=seed)
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(N_SENTINELS)])
    if any(s is None or s == tokenizer.unk_token_id for s in sentinels):
        raise OdysseyError(
            "span corruption needs sentinel tokens <extra_id_0>... in the tokenizer",
            hint="pretrain span models from scratch, or init_from a T5-style model",
        )
    return SpanCollator(sentinels, tokenizer.eos_token_id, tokenizer.pad_token_id, seed=seed)


def _sample(objective: str, model, tokenizer, texts: list[str]) -> str:
    """A short qualitative check: a continuation (clm), a filled mask (mlm), filled spans (span)."""
    import torch

    model.eval()
    with torch.inference_mode():
        if objective == "clm":
            ids = tokenizer("#Person1#: Good morning", return_tensors="pt", add_special_tokens=False)
            out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            return tokenizer.decode(out[0], skip_special_tokens=True)
        words = texts[0].split()[:12]
        if objective == "mlm":
            words[min(5, len(words) - 1)] = tokenizer.mask_token
            text = " ".join(words)
            batch = tokenizer(text, return_tensors="pt")
            logits = model(**batch).logits[0]
            positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            ids = batch["input_ids"][0].clone()
            for pos in positions:
                ids[pos] = int(logits[pos].argmax())
            return f"{text} -> {tokenizer.decode(ids, skip_special_tokens=True)}"
        words[3:5] = ["<extra_id_0>"]
        text = " ".join(words)
        batch = tokenizer(text, return_tensors="pt")
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
        return f"{text} -> {tokenizer.decode(out[0], skip_special_tokens=False)}"


def _write_report(folder: Path, result: PretrainResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_pts = [(h["step"], h["loss"]) for h in result.curve if "loss" in h]
    val_pts = [(h["step"], h["val_loss"]) for h in result.curve if "val_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train_pts:
        ax.plot(*zip(*train_pts), label="train loss")
    if val_pts:
        ax.plot(*zip(*val_pts), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"pretraining: {result.objective}, {result.size}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=100)
    plt.close(fig)
    rows = [
        f"| {h['step']} | {h['val_loss']:.4f} | {h['val_perplexity']:.2f} |" for h in result.curve if "val_loss" in h
    ]
    text = "\n".join(
        [
            f"# Pretraining report: {result.candidate}",
            "",
            f"- objective: {result.objective}; size preset: {result.size}; parameters: {result.n_params:,}",
            f"- tokens seen: {result.tokens:,} in {result.steps} steps, {result.wall_s:.1f} s"
            + (f" (resumed from step {result.resumed_from})" if result.resumed_from else ""),
            f"- final validation loss {result.val_loss:.4f}, perplexity {result.val_perplexity:.2f}",
            f"- sample: `{result.sample}`",
            "",
            "![loss](loss.png)",
            "",
            "| step | validation loss | perplexity |",
            "| ---: | ---: | ---: |",
            *rows,
            "",
        ]
    )
    path = folder / "report.md"
    path.write_text(text)
    (folder / "report.json").write_text(json.dumps(result.as_dict(), indent=2, default=str))
    return path


def pretrain(project, *, name: str | None = None, resume: bool = False, **overrides) -> PretrainResult:
    """Train a model from scratch (or continue one) on a corpus and record it as a candidate."""
    import torch

    from odyssey.paths import check_name, inside

    if name is not None:
        check_name(name, "candidate name")  # before any work: it names a folder that a fresh run replaces
    settings = _validated_settings(project, overrides)
    objective, size = settings.objective, settings.size
    source, texts = _read_texts(project, settings)
    name = name or (f"pretrained-{objective}-{size}" if not settings.init_from else f"continued-{objective}")
    folder = inside(project.state_dir / "pretrain", name, "candidate name")
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    val_texts, train_texts = _split_validation(texts, settings.seed)

    torch.manual_seed(settings.seed)
    parent_id = None
    if settings.init_from:
        model, tokenizer, parent_id = _continued_model(project, settings, folder)
    else:
        model, tokenizer = _fresh_model(settings, folder, train_texts, resume)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_blocks, val_blocks = _pack_splits(train_texts, val_texts, tokenizer, settings.seq_len)
    collate = _collator(objective, tokenizer, settings.seed)
    eval_fn = _validation_loss(_validation_batches(objective, tokenizer, val_blocks, settings))
    cfg = _train_config(folder, settings)
    spec_dict = project.spec.as_dict()
    run_config = {
        **settings.model_dump(),
        "name": name,
        "corpus": str(source),
        "n_docs": len(texts),
        "train_blocks": len(train_blocks),
        "val_blocks": len(val_blocks),
        "resume": resume,
    }
    with project.store.run("select", spec_dict, {"action": "pretrain", **run_config}) as run:
        started = time.perf_counter()
        result = _train_from_initial_eval(model, train_blocks, cfg, eval_fn, collate, folder, settings, resume)
        model_dir = _save_model(folder, model, tokenizer)
        final = _final_eval(result, model, eval_fn)
        sample = _sample(objective, model, tokenizer, val_texts)
        n_params = sum(p.numel() for p in model.parameters())
        _record_candidate(project, run, name, model_dir, run_config, parent_id, final, n_params, result)
        out = PretrainResult(
            run.id,
            name,
            objective,
            size,
            str(model_dir),
            n_params,
            result.tokens,
            result.steps,
            time.perf_counter() - started,
            final["val_loss"],
            final["val_perplexity"],
            result.history,
            sample,
            "",
            result.resumed_from,
            run_config,
        )
        _publish_report(run, folder, out)
    return out


def _validated_settings(project, overrides: dict):
    """The spec's ``select.pretrain`` with the caller's overrides applied."""
    settings = project.spec.select.pretrain.model_copy(update=overrides)
    settings = type(settings).model_validate(settings.model_dump())  # overrides are validated like the spec
    if settings.size not in PRESETS:
        raise OdysseyError(f"unknown size preset {settings.size!r}", hint=f"use one of {', '.join(PRESETS)}")
    return settings


def _read_texts(project, settings) -> tuple[Path, list[str]]:
    """The corpus folder and its documents' texts (the shipped corpus when none is set)."""
    from odyssey.select.corpus_gen import corpus_dir
    from odyssey.select.curation import read_corpus

    source = Path(settings.corpus) if settings.corpus else corpus_dir()
    if settings.corpus and not source.is_absolute():
        source = project.root / source
    texts = [d.text for d in read_corpus(source)]
    if len(texts) < 2:
        raise OdysseyError(
            f"the corpus {source} has {len(texts)} document(s); pretraining needs more",
            hint="add text files, or leave select.pretrain.corpus empty for the shipped corpus",
        )
    return source, texts


def _split_validation(texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(validation, training) texts: a seeded shuffle, one document in twenty (at least one) held out."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_val = max(1, len(texts) // 20)
    return [texts[i] for i in order[:n_val]], [texts[i] for i in order[n_val:]]


def _continued_model(project, settings, folder: Path):
    """(model, tokenizer, parent candidate id) for continued pretraining: the model's own tokenizer and
    architecture."""
    from odyssey.models import FAMILY_DECODER, FAMILY_ENCODER, load

    objective = settings.objective
    head = {"clm": "causal-lm", "mlm": "masked-lm", "span": "seq2seq-lm"}[objective]
    loaded = load(settings.init_from, root=project.root, head=head, dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    expected = {"clm": FAMILY_DECODER, "mlm": FAMILY_ENCODER}.get(objective)
    if expected and loaded.family != expected:
        raise OdysseyError(
            f"{settings.init_from} is {loaded.family}; objective {objective} needs {expected}",
            hint="pick the objective of the model's family (clm, mlm or span)",
        )
    tokenizer.save_pretrained(folder / "tokenizer")
    parent = project.store.candidate(settings.init_from)
    return model, tokenizer, parent["id"] if parent else None


def _fresh_model(settings, folder: Path, train_texts: list[str], resume: bool):
    """(model, tokenizer) from scratch: a tokenizer trained on the corpus (or the one a resumed run trained)
    and a randomly initialized model of the size preset."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tok_dir = folder / "tokenizer"
    if resume and (tok_dir / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(train_texts, settings.tokenizer, settings.vocab_size, tok_dir)
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = model_config(settings.objective, settings.size, len(tokenizer), settings.seq_len, ids)
    cls = {"clm": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM, "span": AutoModelForSeq2SeqLM}
    return cls[settings.objective].from_config(config), tokenizer


def _pack_splits(train_texts: list[str], val_texts: list[str], tokenizer, seq_len: int):
    """(training blocks, validation blocks) of ``seq_len`` tokens."""
    # MLM blocks carry the encoder's [CLS]-like start token: BERT-style models expect one.
    train_blocks = pack(train_texts, tokenizer, seq_len)
    # Validation on at most 64 blocks: a steady estimate of the loss without dominating a CPU run's time.
    val_blocks = pack(val_texts, tokenizer, seq_len)[:64]
    if not train_blocks or not val_blocks:
        raise OdysseyError(
            f"the corpus is too small for blocks of {seq_len} tokens",
            hint="lower select.pretrain.seq_len or add text",
        )
    return train_blocks, val_blocks


def _validation_batches(objective: str, tokenizer, val_blocks: list[list[int]], settings) -> list[dict]:
    """The validation blocks collated once, with their own seed, so every evaluation scores the same batches."""
    val_collate = _collator(objective, tokenizer, settings.seed + 1)
    size = settings.batch_size
    return [val_collate(val_blocks[i : i + size]) for i in range(0, len(val_blocks), size)]


def _validation_loss(val_batches: list[dict]):
    """The training loop's ``eval_fn``: token-weighted validation loss and its perplexity."""
    from odyssey.training import to_device

    def eval_fn(m):
        device = next(m.parameters()).device
        losses, weights = [], []
        for batch in val_batches:
            batch = to_device(batch, device)
            out = m(**batch)
            n = int((batch["labels"] != -100).sum())
            losses.append(float(out.loss) * n)
            weights.append(n)
        loss = sum(losses) / max(sum(weights), 1)
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50))}

    return eval_fn


def _train_config(folder: Path, settings):
    from odyssey.training import TrainConfig

    return TrainConfig(
        output_dir=folder / "train",
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        batch_size=settings.batch_size,
        seed=settings.seed,
        eval_every=settings.eval_every,
        save_every=settings.eval_every,
        log_every=max(1, settings.eval_every // 5),
        weight_decay=0.01,
        lr_scheduler="cosine",
    )


def _train_from_initial_eval(model, train_blocks, cfg, eval_fn, collate, folder: Path, settings, resume: bool):
    """THE training loop, with the untrained model's evaluation as the curve's first point (kept on disk so
    a resumed run's curve starts there too)."""
    import torch

    from odyssey.select.objectives import lm_loss
    from odyssey.training import train

    before = None
    if not (resume and (folder / "train").exists()):
        model.eval()
        with torch.no_grad():
            before = {"step": 0, **eval_fn(model)}  # where the curve starts (random init: ~ln(vocab))
    result = train(
        model,
        train_blocks,
        lm_loss,
        cfg,
        eval_fn=eval_fn,
        collate_fn=collate,
        resume=resume,
        description=f"pretraining {settings.objective} ({settings.size})",
    )
    if before is not None:
        result.history.insert(0, before)
        (folder / "initial_eval.json").write_text(json.dumps(before))
    elif (folder / "initial_eval.json").exists():
        result.history.insert(0, json.loads((folder / "initial_eval.json").read_text()))
    return result


def _save_model(folder: Path, model, tokenizer) -> Path:
    """Save model and tokenizer to ``folder/model``, written beside it first so a crash leaves no half model."""
    model_dir = folder / "model"
    tmp = folder / "model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.replace(model_dir)
    return model_dir


def _final_eval(result, model, eval_fn) -> dict:
    """The validation loss and perplexity reported: the best evaluation's when the loop kept one."""
    final = eval_fn(model) if not any("val_loss" in h for h in result.history[-1:]) else result.history[-1]
    if result.best is not None:
        final = {"val_loss": result.best["value"], "val_perplexity": math.exp(min(result.best["value"], 50))}
    return final


def _record_candidate(project, run, name, model_dir, run_config, parent_id, final, n_params, result) -> None:
    """The pretrained model as a candidate in the store, with its metrics."""
    prompt_cfg = project.default_prompt()
    cand_id = project.store.upsert_candidate(
        name, "select", str(model_dir), {"prompt": prompt_cfg.as_dict(), "pretrain": run_config}, parent_id, run.id
    )
    metrics = {
        "val_loss": final["val_loss"],
        "val_perplexity": final["val_perplexity"],
        "n_params": n_params,
        "tokens": result.tokens,
        "train_wall_s": result.wall_s,
        "train_tokens_per_s": result.tokens_per_s,
    }
    run.log_metrics(metrics, candidate_id=cand_id, split="pretrain")


def _publish_report(run, folder: Path, out: PretrainResult) -> None:
    """Write the report and plot, and attach them and the summary to the run."""
    report = _write_report(folder, out)
    out.report = str(report)
    run.add_artifact(report, "report")
    run.add_artifact(folder / "loss.png", "plot")
    run.set_summary({k: v for k, v in out.as_dict().items() if k != "curve"})
