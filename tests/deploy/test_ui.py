"""The web UI in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
playground streaming + thumbs + "write a better answer", compare (live and the queue), the
dashboard. Screenshots are written and checked (size, not blank)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

SHOTS = Path(os.environ.get("ODYSSEY_SCREENSHOTS", "")) if os.environ.get("ODYSSEY_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(server.url + "/ui/index.html")
    page.fill("#apikey", server.keys["alice"])
    page.click("#savekey")  # stores the key and reloads
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    yield page
    context.close()


def check_screenshot(page, path: Path):
    """A real rendering: a PNG of the viewport's size with many distinct colours (not a blank page)."""
    from PIL import Image

    page.screenshot(path=str(path), full_page=False)
    img = Image.open(path).convert("RGB")
    assert img.size == (1280, 900)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        img.save(SHOTS / path.name)


def feedback_rows(server, kind=None):
    from odyssey.store import deploy as sd

    project = server.project()
    rows = sd.feedback(project.store, kind)
    project.store.close()
    return rows


def test_playground_streams_and_records_feedback(page, server, tmp_path):
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["tiny-a", "tiny-b"]
    page.fill("#max_tokens", "12")
    page.fill("#prompt", "Summarize: A wants tea, B prefers coffee.")
    before = len(feedback_rows(server))
    page.click("#send")
    page.wait_for_selector(".msg.assistant .meta", timeout=60_000)  # the bar appears when the stream ends
    answer = page.inner_text(".msg.assistant .content")
    rid = page.get_attribute(".msg.assistant", "data-request-id")
    assert rid.startswith("chatcmpl-")
    from odyssey.store import deploy as sd

    project = server.project()
    assert sd.request(project.store, rid)["output"] == answer  # what the page showed is what was captured
    project.store.close()
    check_screenshot(page, tmp_path / "playground.png")

    page.click(".thumb-up")
    page.wait_for_function("document.querySelector('.fb-note').textContent.includes('recorded')")
    page.click(".better")
    page.fill(".better-text", "A wants tea; B prefers coffee.")
    page.click(".save-better")
    page.wait_for_function("document.querySelector('.fb-note').textContent.includes('better answer')")
    rows = feedback_rows(server)[before:]
    assert [r["kind"] for r in rows] == ["thumbs", "correction"]
    assert rows[0]["thumbs"] == 1 and rows[0]["request_id"] == rid and rows[0]["source"] == "playground"
    assert rows[1]["correction"] == "A wants tea; B prefers coffee." and rows[1]["output"] == answer


def test_compare_live_records_a_preference(page, server, tmp_path):
    page.goto(server.url + "/ui/compare.html")
    page.wait_for_function("document.querySelectorAll('#model-b option').length > 1")
    assert page.input_value("#model-a") == "tiny-a" and page.input_value("#model-b") == "tiny-b"
    page.fill("#prompt", "Summarize: the meeting moved to Friday.")
    page.fill("#max_tokens", "10")
    page.click("#run")
    page.wait_for_selector("#choose-b:not([disabled])", timeout=60_000)
    a, b = page.inner_text("#out-a"), page.inner_text("#out-b")
    check_screenshot(page, tmp_path / "compare.png")
    page.click("#choose-b")
    page.wait_for_function("document.getElementById('status').textContent.includes('recorded')")
    pref = feedback_rows(server, "preference")[-1]
    assert (pref["prompt"], pref["chosen"], pref["rejected"]) == ("Summarize: the meeting moved to Friday.", b, a)
    assert pref["source"] == "compare" and "tiny-b" in pref["comment"]


def test_compare_queue_labels_pairs_from_the_store(page, server):
    from odyssey.store import deploy as sd

    project = server.project()
    sd.enqueue_pairs(project.store, [{"prompt": "ui-q1", "a": "first A", "b": "first B", "source": "align-test"},
                                     {"prompt": "ui-q2", "a": "second A", "b": "second B", "source": "align-test"}])
    page.goto(server.url + "/ui/compare.html#queue")
    for _ in range(10):  # earlier tests may have left pairs: decide until ours are done
        page.wait_for_selector("#choose-a:not([disabled])", timeout=30_000)
        prompt = page.inner_text("#pair-prompt")
        page.click("#choose-a")
        page.wait_for_function("document.getElementById('status').textContent.length > 0")
        if "ui-q2" in prompt:
            break
    page.wait_for_function("document.getElementById('status').textContent.includes('empty')")
    mine = [r for r in project.store.db.execute("SELECT * FROM preference_queue WHERE prompt LIKE 'ui-q%' ORDER BY id")]
    assert [(r["status"], r["choice"]) for r in mine] == [("done", "a"), ("done", "a")]
    prefs = [f for f in sd.feedback(project.store, "preference") if f["prompt"] in ("ui-q1", "ui-q2")]
    assert [(f["chosen"], f["rejected"], f["source"]) for f in prefs] == [
        ("first A", "first B", "compare-queue"), ("second A", "second B", "compare-queue")]
    project.store.close()


def test_dashboard_shows_the_board(page, server, tmp_path):
    page.goto(server.url + "/ui/dashboard.html")
    page.wait_for_selector("#candidates tbody tr")
    names = page.eval_on_selector_all("#candidates tbody tr td:first-child", "tds => tds.map(t => t.textContent)")
    assert {"tiny-a", "tiny-b"} <= {n.replace(" ★", "") for n in names}
    stages = page.eval_on_selector_all("#stages tbody tr td:first-child", "tds => tds.map(t => t.textContent)")
    assert stages[:3] == ["scope", "select", "prompt"] and "deploy" in stages
    assert page.inner_text("#stages tbody") .count("running") >= 1  # this server's deploy run
    check_screenshot(page, tmp_path / "dashboard.png")


def test_ui_without_a_key_says_what_to_do(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/ui/index.html")
    page.wait_for_function("document.getElementById('status').textContent.length > 0")
    assert "API key" in page.inner_text("#status")
    context.close()
