"""Reading documents (Markdown, text, HTML, PDF) into structural blocks, and cutting blocks into
chunks that respect that structure.

Parsing uses maintained libraries: markdown-it-py (CommonMark tokens with source line maps) for
Markdown, BeautifulSoup for HTML, pypdf for PDF. The chunker is written here (about 40 lines)
because it works on those blocks: a chunk never crosses a heading or a PDF page, keeps whole
paragraphs, tables and list items where they fit, splits an over-long block at sentence ends,
and overlaps consecutive chunks of a section by whole sentences. LangChain's
``MarkdownHeaderTextSplitter``/``RecursiveCharacterTextSplitter`` cover part of this (Markdown
only, character counts) and would bring langchain-core into the core path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from odyssey.errors import OdysseyError, require

SUPPORTED = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass
class Block:
    """One structural unit: a paragraph, list item, table or code block, under its headings."""

    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None


@dataclass
class Document:
    path: Path
    kind: str
    title: str
    blocks: list[Block]


@dataclass
class Chunk:
    id: str
    source: str
    title: str
    section: str
    page: int | None
    index: int
    text: str

    @property
    def embed_text(self) -> str:
        """What is embedded and indexed: the text under its title and section (a contextual header)."""
        header = " > ".join(p for p in (self.title, self.section) if p)
        return f"{header}\n{self.text}" if header else self.text

    @property
    def citation(self) -> str:
        where = self.source + (f" p.{self.page}" if self.page else "")
        return f"{where} § {self.section}" if self.section else where


# ---- parsers ------------------------------------------------------------------------------
def parse_markdown(text: str, fallback_title: str) -> tuple[str, list[Block]]:
    MarkdownIt = require("markdown_it", "augment", "Markdown documents").MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    blocks: list[Block] = []
    tokens = md.parse(text)
    title = None
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.map is None or tok.nesting == -1:
            continue
        if tok.type == "heading_open":
            level = int(tok.tag[1])
            heading = tokens[i + 1].content.strip()
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, heading)]
            if level == 1 and title is None:
                title = heading
            continue
        body = "\n".join(lines[tok.map[0] : tok.map[1]]).strip()
        if body:
            blocks.append(Block(body, tuple(h for lv, h in stack if not (lv == 1 and h == title))))
    return title or fallback_title, blocks


def parse_html(text: str, fallback_title: str) -> tuple[str, list[Block]]:
    BeautifulSoup = require("bs4", "augment", "HTML documents").BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(["script", "style", "nav", "header", "footer", "aside", "noscript", "template", "form"]):
        tag.decompose()
    root = soup.body or soup
    headings = {f"h{i}": i for i in range(1, 7)}
    wanted = [*headings, "p", "li", "pre", "table", "blockquote", "dt", "dd"]
    stack: list[tuple[int, str]] = []
    blocks: list[Block] = []
    h1 = None
    for el in root.find_all(wanted):
        if any(parent.name in wanted for parent in el.parents if parent is not root):
            continue  # nested inside a block already taken whole (a <p> inside an <li>, a table cell)
        if el.name in headings:
            level, text_ = headings[el.name], el.get_text(" ", strip=True)
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, text_)]
            h1 = h1 or (text_ if level == 1 else None)
            continue
        if el.name == "table":
            rows = [
                " | ".join(c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])) for tr in el.find_all("tr")
            ]
            body = "\n".join(r for r in rows if r.strip())
        else:
            body = " ".join(el.get_text(" ", strip=True).split())
            body = f"- {body}" if el.name == "li" else body
        if body:
            blocks.append(Block(body, tuple(h for lv, h in stack if not (lv == 1 and h == h1))))
    return h1 or title or fallback_title, blocks


def parse_text(text: str, fallback_title: str) -> tuple[str, list[Block]]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    title = fallback_title
    if paragraphs and len(paragraphs[0]) < 100 and "\n" not in paragraphs[0] and not paragraphs[0].endswith("."):
        title = paragraphs.pop(0)
    return title, [Block(" ".join(p.split())) for p in paragraphs]


def parse_pdf(path: Path, fallback_title: str) -> tuple[str, list[Block]]:
    PdfReader = require("pypdf", "augment", "PDF documents").PdfReader

    reader = PdfReader(str(path))
    meta_title = (reader.metadata.title if reader.metadata else None) or fallback_title
    blocks = []
    for number, page in enumerate(reader.pages, 1):
        text = page.extract_text() or ""
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            if para:
                blocks.append(Block(para, (), number))
    return str(meta_title), blocks


def read_document(path: Path) -> Document:
    kind = SUPPORTED.get(path.suffix.lower())
    if kind is None:
        raise OdysseyError(
            f"{path}: unsupported file type {path.suffix!r}", hint=f"supported: {', '.join(sorted(SUPPORTED))}"
        )
    fallback = path.stem.replace("-", " ").replace("_", " ")
    try:
        if kind == "pdf":
            title, blocks = parse_pdf(path, fallback)
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            title, blocks = {"markdown": parse_markdown, "html": parse_html, "text": parse_text}[kind](text, fallback)
    except OdysseyError:
        raise
    except Exception as exc:  # a corrupt PDF or unreadable file is the user's file, not our bug
        raise OdysseyError(
            f"{path}: could not read this {kind} file ({type(exc).__name__}: {exc})",
            hint="check that the file is not corrupt, or remove it from the folder",
        ) from None
    return Document(path, kind, title, blocks)


def find_files(paths: list[Path]) -> list[Path]:
    """Every supported file under the given files and folders (hidden files skipped), sorted."""
    found = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise OdysseyError(f"{path}: no such file or folder", hint="give files or folders with .md/.txt/.html/.pdf")
        if path.is_file():
            if path.suffix.lower() not in SUPPORTED:
                raise OdysseyError(
                    f"{path}: unsupported file type {path.suffix!r}", hint=f"supported: {', '.join(sorted(SUPPORTED))}"
                )
            found.append(path.resolve())
            continue
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path).parts
            if file.is_file() and file.suffix.lower() in SUPPORTED and not any(p.startswith(".") for p in rel):
                found.append(file.resolve())
    return sorted(set(found))


# ---- chunking -----------------------------------------------------------------------------
def _words(text: str) -> int:
    return len(text.split())


def _pieces(block: Block, size: int) -> list[str]:
    """A block as it is, or cut at sentence ends (then at words) into pieces of at most ``size`` words."""
    if _words(block.text) <= size:
        return [block.text]
    out, current = [], []
    for sentence in _SENTENCE_END.split(block.text):
        words = sentence.split()
        while len(words) > size:  # a single sentence longer than a chunk: cut it at words
            out.append(" ".join(words[:size]))
            words = words[size:]
        if current and _words(" ".join(current)) + len(words) > size:
            out.append(" ".join(current))
            current = []
        if words:
            current.append(" ".join(words))
    if current:
        out.append(" ".join(current))
    return out


def _tail(text: str, overlap: int) -> str:
    """The last whole sentences of ``text`` that fit in ``overlap`` words."""
    if overlap <= 0:
        return ""
    taken = []
    for sentence in reversed(_SENTENCE_END.split(text)):
        if _words(" ".join([sentence, *taken])) > overlap:
            break
        taken.insert(0, sentence)
    return " ".join(taken)


def chunk_document(doc: Document, source: str, size: int = 120, overlap: int = 24) -> list[Chunk]:
    if overlap >= size:
        raise OdysseyError(
            f"chunk overlap ({overlap}) must be smaller than the chunk size ({size})",
            hint="e.g. augment.chunk_size: 120, augment.chunk_overlap: 24",
        )
    sections: list[tuple[tuple[str, ...], int | None, list[str]]] = []
    for block in doc.blocks:
        key = (block.headings, block.page)
        if not sections or sections[-1][:2] != key:
            sections.append((block.headings, block.page, []))
        # Over-long blocks are cut a little shorter than a chunk, so the overlap still fits in front.
        sections[-1][2].extend(_pieces(block, size - overlap))
    chunks: list[Chunk] = []
    for headings, page, pieces in sections:
        current: list[str] = []
        previous = ""
        for piece in pieces:
            if current and _words("\n\n".join(current)) + _words(piece) > size:
                previous = "\n\n".join(current)
                chunks.append(_make(doc, source, headings, page, len(chunks), previous))
                lead = _tail(previous, overlap)
                current = [lead] if lead and _words(lead) + _words(piece) <= size else []
            current.append(piece)
        if current:
            chunks.append(_make(doc, source, headings, page, len(chunks), "\n\n".join(current)))
    return chunks


def _make(doc: Document, source: str, headings, page, index: int, text: str) -> Chunk:
    digest = hashlib.sha256(f"{source}\0{index}\0{text}".encode()).hexdigest()[:24]
    return Chunk(digest, source, doc.title, " > ".join(headings), page, index, text)
