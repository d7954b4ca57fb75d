"""Data curation for pretraining corpora (``odyssey data curate corpus/ --out clean/``).

Pipeline, in order, each document dropped by the first rule it fails:
1. exact duplicates: sha256 of the whitespace-normalized, lower-cased text;
2. quality filters (Gopher's rules, Rae et al. 2021, appendix A): word count, symbol-to-word ratio,
   share of words with a letter, duplicated lines, top 2-gram character share; language: Gopher's
   stop-word rule (at least two of the, be, to, of, and, that, have, with) for English, since a
   language-ID model cannot be downloaded offline;
3. optional perplexity filter with a small reference model (``perplexity_model``, ``max_perplexity``);
4. near duplicates: MinHash over word shingles with locality-sensitive hashing (``datasketch``); a
   document whose estimated Jaccard similarity with a kept one reaches the threshold is dropped;
5. PII scrubbing of what is kept: e-mail addresses and phone numbers become <EMAIL> / <PHONE>.

The report counts kept and dropped documents per rule, with examples, and is written as JSON and
Markdown beside the cleaned corpus (``clean.jsonl``, one ``{"id", "text"}`` per line).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError, require

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# International or North-American style numbers with at least 7 digits, separators allowed.
PHONE = re.compile(r"(?<![\w#])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,3}(?!\w)")
SPEAKER_TAG = re.compile(r"#\w+#")
STOP_WORDS_EN = {"the", "be", "to", "of", "and", "that", "have", "with"}
WORD = re.compile(r"\S+")
RULES = (
    "exact_duplicate",
    "too_short",
    "too_long",
    "symbols",
    "non_alpha",
    "repeated_lines",
    "repeated_ngrams",
    "language",
    "perplexity",
    "near_duplicate",
)


@dataclass
class Document:
    id: str
    text: str
    source: str


@dataclass
class CurationReport:
    source: str
    out: str
    n_input: int
    n_kept: int
    dropped: dict[str, int]
    examples: dict[str, list[dict]]
    pii: dict[str, int]
    dropped_ids: dict[str, list[str]] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_kept: int = 0
    duplicate_of: dict[str, str] = field(default_factory=dict)

    @property
    def kept_fraction(self) -> float:
        return self.n_kept / self.n_input if self.n_input else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "kept_fraction": self.kept_fraction}


def read_corpus(source: Path) -> list[Document]:
    """Documents from a folder (recursively) or one file: .txt (one document per file, or per blank-line
    separated block when the file holds several), .jsonl/.json (a ``text`` field)."""
    source = Path(source)
    if not source.exists():
        raise OdysseyError(f"corpus not found: {source}", hint="give a folder of .txt/.jsonl files or one such file")
    files = (
        [source]
        if source.is_file()
        else sorted(p for p in source.rglob("*") if p.suffix in {".txt", ".jsonl", ".json", ".md"})
    )
    if not files:
        raise OdysseyError(f"{source} holds no .txt, .md, .jsonl or .json files", hint="put the corpus text there")
    docs: list[Document] = []
    for path in files:
        rel = path.name if source.is_file() else str(path.relative_to(source))
        if path.suffix in {".jsonl", ".json"}:
            lines = path.read_text(encoding="utf-8").splitlines() if path.suffix == ".jsonl" else None
            records = (
                [json.loads(line) for line in lines if line.strip()]
                if lines is not None
                else json.loads(path.read_text(encoding="utf-8"))
            )
            for i, record in enumerate(records):
                if not isinstance(record, dict) or "text" not in record:
                    raise OdysseyError(
                        f"{path}: record {i + 1} has no 'text' field",
                        hint='each line must be a JSON object like {"text": "..."}',
                    )
                docs.append(Document(str(record.get("id", f"{rel}:{i + 1}")), str(record["text"]), rel))
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            blocks = [b.strip() for b in re.split(r"\n\s*\n\s*\n", text) if b.strip()]  # 2+ blank lines split docs
            for i, block in enumerate(blocks):
                docs.append(Document(f"{rel}:{i + 1}" if len(blocks) > 1 else rel, block, rel))
    return docs


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def quality_problem(text: str, cfg) -> str | None:
    """The first quality rule ``text`` fails, or None."""
    words = WORD.findall(text)
    n = len(words)
    if n < cfg.min_words:
        return "too_short"
    if n > cfg.max_words:
        return "too_long"
    # Gopher counts '#' and ellipses per word. Speaker tags such as #Person1# (a dialogue corpus's own
    # markup) are not the hashtag spam the rule is after, so they are left out of the count.
    untagged = SPEAKER_TAG.sub(" ", text)
    symbols = untagged.count("#") + untagged.count("...") + untagged.count("…")
    symbols += sum(1 for w in words if not any(c.isalnum() for c in w))
    if symbols / n > cfg.max_symbol_ratio:
        return "symbols"
    if sum(1 for w in words if any(c.isalpha() for c in w)) / n < cfg.min_alpha_ratio:
        return "non_alpha"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        counts = Counter(lines)
        if sum(c for c in counts.values() if c > 1) / len(lines) > cfg.max_repeated_line_ratio:
            return "repeated_lines"
    lowered = [w.lower() for w in words]
    if n >= 4:
        bigrams = Counter(zip(lowered, lowered[1:]))
        ((top, count),) = bigrams.most_common(1)
        covered = count * (len(top[0]) + len(top[1])) / max(sum(len(w) for w in lowered), 1)
        if count > 1 and covered > cfg.max_top_ngram_ratio:
            return "repeated_ngrams"
    if "en" in cfg.languages and cfg.languages == ["en"]:
        if len(STOP_WORDS_EN & set(lowered)) < 2:
            return "language"
    return None


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    text, n_email = EMAIL.subn("<EMAIL>", text)

    def phone(match):
        digits = sum(c.isdigit() for c in match.group(0))
        return "<PHONE>" if digits >= 7 else match.group(0)

    counted = {"phone": 0}

    def count_phone(match):
        out = phone(match)
        counted["phone"] += out == "<PHONE>"
        return out

    text = PHONE.sub(count_phone, text)
    return text, {"email": n_email, "phone": counted["phone"]}


def shingles(text: str, n: int) -> set[str]:
    words = normalize(re.sub(r"[^\w\s]", " ", text)).split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _perplexities(texts: list[str], ref: str) -> list[float]:
    import math

    import torch

    from odyssey.models import load

    loaded = load(ref)
    tok, model = loaded.tokenizer, loaded.model
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=512)["input_ids"].to(model.device)
            if ids.shape[1] < 2:
                out.append(float("inf"))
                continue
            out.append(math.exp(float(model(input_ids=ids, labels=ids).loss)))
    return out


def curate(source: str | Path, out: str | Path, cfg=None) -> CurationReport:
    """Clean a corpus into ``out/clean.jsonl`` with ``out/report.json`` and ``out/report.md``."""
    from odyssey.spec import CurateSpec

    datasketch = require("datasketch", "select", "near-duplicate removal (MinHash LSH)")

    cfg = cfg or CurateSpec()
    if (cfg.perplexity_model is None) != (cfg.max_perplexity is None):
        raise OdysseyError(
            "the perplexity filter needs both perplexity_model and max_perplexity",
            hint="set both under select.curate in odyssey.yaml, or neither",
        )
    docs = read_corpus(Path(source))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dropped: dict[str, list[Document]] = {rule: [] for rule in RULES}
    duplicate_of: dict[str, str] = {}
    survivors = _drop_exact_duplicates_and_low_quality(docs, cfg, dropped, duplicate_of)
    if cfg.perplexity_model:
        survivors = _drop_high_perplexity(survivors, cfg, dropped)
    kept_docs = _drop_near_duplicates(survivors, cfg, dropped, duplicate_of, datasketch)
    pii, tokens_kept = _write_clean(kept_docs, cfg, out)
    report = CurationReport(
        source=str(source),
        out=str(out),
        n_input=len(docs),
        n_kept=len(kept_docs),
        dropped={rule: len(items) for rule, items in dropped.items()},
        examples={
            rule: [{"id": d.id, "text": d.text[:200]} for d in items[:3]] for rule, items in dropped.items() if items
        },
        pii=dict(pii),
        dropped_ids={rule: [d.id for d in items] for rule, items in dropped.items() if items},
        tokens_in=sum(len(WORD.findall(d.text)) for d in docs),
        tokens_kept=tokens_kept,
        duplicate_of=duplicate_of,
    )
    (out / "report.json").write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    (out / "report.md").write_text(report_markdown(report))
    return report


def _drop_exact_duplicates_and_low_quality(
    docs: list[Document], cfg, dropped: dict[str, list[Document]], duplicate_of: dict[str, str]
) -> list[Document]:
    """Rules 1 and 2: the documents that are neither an exact duplicate of an earlier one nor fail a quality
    rule; the others go to ``dropped`` under the rule they fail."""
    seen_hash: dict[str, str] = {}
    survivors: list[Document] = []
    for doc in docs:
        digest = hashlib.sha256(normalize(doc.text).encode()).hexdigest()
        if digest in seen_hash:
            dropped["exact_duplicate"].append(doc)
            duplicate_of[doc.id] = seen_hash[digest]
            continue
        seen_hash[digest] = doc.id
        problem = quality_problem(doc.text, cfg)
        if problem:
            dropped[problem].append(doc)
            continue
        survivors.append(doc)
    return survivors


def _drop_high_perplexity(docs: list[Document], cfg, dropped: dict[str, list[Document]]) -> list[Document]:
    """Rule 3: the documents the reference model finds no more perplexing than ``max_perplexity``."""
    from odyssey import ui

    with ui.status(f"perplexity filter with {cfg.perplexity_model}"):
        ppl = _perplexities([d.text for d in docs], cfg.perplexity_model)
    kept = []
    for doc, value in zip(docs, ppl):
        (dropped["perplexity"] if value > cfg.max_perplexity else kept).append(doc)
    return kept


def _drop_near_duplicates(
    docs: list[Document], cfg, dropped: dict[str, list[Document]], duplicate_of: dict[str, str], datasketch
) -> list[Document]:
    """Rule 4: the documents with no kept earlier one at or above the Jaccard threshold (MinHash LSH)."""
    from odyssey import ui

    lsh = datasketch.MinHashLSH(threshold=cfg.near_dup_threshold, num_perm=cfg.num_perm)
    signatures: dict[str, datasketch.MinHash] = {}
    kept_docs: list[Document] = []
    with ui.progress("near-duplicate search (MinHash LSH)", total=len(docs)) as bar:
        for doc in docs:
            mh = datasketch.MinHash(num_perm=cfg.num_perm, seed=1)
            mh.update_batch([s.encode() for s in shingles(doc.text, cfg.shingle)])
            # LSH returns candidates; confirm with the estimated Jaccard to keep precision high.
            match = next((key for key in lsh.query(mh) if signatures[key].jaccard(mh) >= cfg.near_dup_threshold), None)
            if match is not None:
                dropped["near_duplicate"].append(doc)
                duplicate_of[doc.id] = match
            else:
                lsh.insert(doc.id, mh)
                signatures[doc.id] = mh
                kept_docs.append(doc)
            bar.advance()
    return kept_docs


def _write_clean(docs: list[Document], cfg, out: Path) -> tuple[Counter, int]:
    """Step 5 and the output: ``out/clean.jsonl`` (PII scrubbed when asked), written whole or not at all;
    returns (PII counts, words kept)."""
    pii = Counter()
    tokens_kept = 0
    tmp = out / "clean.jsonl.partial"
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc in docs:
            text, counts = scrub_pii(doc.text) if cfg.scrub_pii else (doc.text, {})
            pii.update(counts)
            tokens_kept += len(WORD.findall(text))
            fh.write(json.dumps({"id": doc.id, "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(out / "clean.jsonl")
    return pii, tokens_kept


def report_markdown(report: CurationReport) -> str:
    lines = [
        f"# Curation report: {report.source}",
        "",
        f"{report.n_kept} of {report.n_input} documents kept ({report.kept_fraction:.1%}); "
        f"{report.tokens_kept} of {report.tokens_in} words.",
        "",
        "| rule | dropped |",
        "| --- | ---: |",
    ]
    lines += [f"| {rule} | {n} |" for rule, n in report.dropped.items()]
    lines += [
        "",
        f"PII scrubbed: {report.pii.get('email', 0)} e-mail addresses, {report.pii.get('phone', 0)} phone numbers.",
        "",
    ]
    for rule, examples in report.examples.items():
        lines.append(f"## {rule}")
        lines += [f"- `{e['id']}`: {e['text'][:160].replace(chr(10), ' ')}" for e in examples]
        lines.append("")
    return "\n".join(lines)
