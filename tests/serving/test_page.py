"""The web page of `nlpipe serve` in headless Chromium: type a sentence, submit, see the entities highlighted.

Needs Debian's chromium (``apt-get install chromium``) and the ``playwright`` package; skipped with the
reason when either is missing. Set ``NLPIPE_SCREENSHOT=path.png`` to keep the screenshot (docs/figures).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from server_process import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SENTENCE = "Peter Blackburn met EU officials in Zürich on Monday ."


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the page test needs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs `pip install playwright`")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


def test_page_highlights_the_entities(browser, ner_server: ServerProcess, ner_run: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    import nlpipe  # noqa: F401

    expected = pipeline("ner", model=str(ner_run), aggregation_strategy="simple")(SENTENCE)
    assert expected, "the tiny model should find an entity in the sentence"

    page = browser.new_page(viewport={"width": 900, "height": 480})
    outside: list[str] = []  # the page must not need the network: every request goes to the server
    page.on("request", lambda req: None if req.url.startswith(ner_server.url) else outside.append(req.url))
    page.goto(ner_server.url + "/", timeout=30_000)  # a browser asks for HTML: the page, not the JSON
    page.wait_for_function("document.getElementById('summary').textContent.includes('token-classification')",
                           timeout=30_000)
    assert page.text_content("#title") == "ner-bilstm-crf"
    page.fill("#input", SENTENCE)
    page.click("#submit")
    page.wait_for_selector("#result mark.entity", timeout=30_000)

    marks = page.query_selector_all("#result mark.entity")
    shown = [(mark.get_attribute("data-type"), mark.query_selector(".entity-label").text_content(),
              mark.evaluate("m => m.firstChild.textContent")) for mark in marks]
    assert shown == [(e["entity_group"], e["entity_group"], SENTENCE[e["start"] : e["end"]]) for e in expected]
    # the whole sentence is shown, entity labels aside, and each type has its colour
    text = page.evaluate("""() => { const r = document.getElementById('result').cloneNode(true);
        r.querySelectorAll('.entity-label').forEach(l => l.remove()); return r.textContent; }""")
    assert text == SENTENCE
    colours = {mark.get_attribute("data-type"): mark.evaluate("m => getComputedStyle(m).backgroundColor")
               for mark in marks}
    assert all(colour not in ("", "rgba(0, 0, 0, 0)") for colour in colours.values())
    assert outside == []

    screenshot = Path(os.environ.get("NLPIPE_SCREENSHOT") or tmp_path / "page.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 1000

    # an error from the server is shown on the page, not swallowed
    page.fill("#input", "x" * 600)  # over this server's --max-chars 500
    page.click("#submit")
    page.wait_for_selector("#error", timeout=30_000)
    assert "limit 500" in page.text_content("#error")
    page.close()


def test_page_shows_the_translation(browser, translation_run: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    import nlpipe  # noqa: F401

    source = "die Katze das Buch findet ."
    expected = pipeline("translation", model=str(translation_run))(source)[0]["translation_text"]
    with ServerProcess(translation_run, tmp_path / "server.log") as server:
        page = browser.new_page()
        page.goto(server.url + "/ui", timeout=30_000)
        page.wait_for_function("document.getElementById('api-hint').textContent === 'POST /translation'",
                               timeout=30_000)
        assert page.text_content("#input-label") == "Text to translate"
        page.fill("#input", source)
        page.click("#submit")
        page.wait_for_selector("#result .generated-text", state="attached", timeout=30_000)
        assert page.text_content("#result .generated-text") == expected
        page.close()
