"""Parsing Markdown, HTML, text and PDF into structural blocks, and structure-aware chunking."""

import pytest

from odyssey.augment.documents import chunk_document, find_files, read_document
from odyssey.errors import OdysseyError


def _pdf(path, pages):
    """A minimal valid PDF with one text line per page (Helvetica), offsets computed for the xref."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        content = len(objects)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def test_markdown_sections_follow_headings(tmp_path):
    md = tmp_path / "guide.md"
    md.write_text(
        "# Guide\n\nIntro text.\n\n## Setup\n\nStep one.\n\n```\n# not a heading\n```\n\n"
        "### Details\n\nDeep.\n\n## Care\n\nWash it.\n"
    )
    doc = read_document(md)
    assert doc.title == "Guide" and doc.kind == "markdown"
    by_text = {b.text: b.headings for b in doc.blocks}
    assert by_text["Intro text."] == ()
    assert by_text["Step one."] == ("Setup",)
    assert by_text["```\n# not a heading\n```"] == ("Setup",)  # a '#' inside code is not a heading
    assert by_text["Deep."] == ("Setup", "Details")
    assert by_text["Wash it."] == ("Care",)


def test_html_drops_scripts_and_navigation(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(
        "<html><head><title>T</title><script>var secret=1;</script></head><body><nav>Home Shop</nav>"
        "<h1>Shipping</h1><p>Ships in 3 days.</p><h2>Express</h2><ul><li>Next day</li></ul>"
        "<table><tr><th>Zone</th><th>Price</th></tr><tr><td>EU</td><td>5</td></tr></table>"
        "<footer>Copyright</footer></body></html>"
    )
    doc = read_document(page)
    texts = [b.text for b in doc.blocks]
    assert doc.title == "Shipping"
    assert "Ships in 3 days." in texts and "- Next day" in texts and "Zone | Price\nEU | 5" in texts
    assert not any("secret" in t or "Home Shop" in t or "Copyright" in t for t in texts)
    assert [b.headings for b in doc.blocks if b.text == "- Next day"] == [("Express",)]


def test_pdf_pages_become_metadata(tmp_path):
    pdf = tmp_path / "manual.pdf"
    _pdf(pdf, ["The stove burns for 90 minutes.", "Clean the jet every season."])
    doc = read_document(pdf)
    chunks = chunk_document(doc, "manual.pdf")
    assert [(c.page, c.text) for c in chunks] == [
        (1, "The stove burns for 90 minutes."),
        (2, "Clean the jet every season."),
    ]
    assert chunks[1].citation == "manual.pdf p.2"


def test_chunks_respect_size_overlap_and_sections(tmp_path):
    sentences = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(60))
    md = tmp_path / "long.md"
    md.write_text(f"# Long\n\n## First\n\n{sentences}\n\n## Second\n\nShort closing section.\n")
    chunks = chunk_document(read_document(md), "long.md", size=50, overlap=12)
    first = [c for c in chunks if c.section == "First"]
    assert len(first) >= 7 and all(len(c.text.split()) <= 50 for c in chunks)
    for a, b in zip(first, first[1:]):  # consecutive chunks share whole sentences
        tail = a.text.split(". ")[-1].rstrip(".")
        assert tail in b.text
    assert [c.text for c in chunks if c.section == "Second"] == ["Short closing section."]
    assert len({c.id for c in chunks}) == len(chunks)
    assert first[0].embed_text.startswith("Long > First\n")


def test_bad_inputs_are_clear_errors(tmp_path):
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(OdysseyError, match="unsupported file type"):
        find_files([tmp_path / "x.docx"])
    with pytest.raises(OdysseyError, match="no such file"):
        find_files([tmp_path / "missing"])
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"not a pdf at all")
    with pytest.raises(OdysseyError, match="could not read"):
        read_document(broken)
    md = tmp_path / "a.md"
    md.write_text("# A\n\ntext")
    with pytest.raises(OdysseyError, match="overlap"):
        chunk_document(read_document(md), "a.md", size=10, overlap=10)
