"""Hostile text in every HTML page the project writes or serves is shown as text, checked in headless Chromium.

The text (a ``<script>`` and an ``<img onerror>``, both setting ``window.__pwned``) goes in through the real
data path: captions of a tiny curated corpus and the corpus folder's name for the gate report and the GX Data
Docs; indexed file and folder names, the model's folder name and the query for the search page. Each page is
loaded in Chromium (no network: the Data Docs' CDN links are refused) and must show the text and run none of it.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gadms.config import ModelConfig, ValidationConfig, params_from_dict
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.reproducible_writes import jpeg_bytes
from gadms.search.web import PAGE, SCRIPT
from gadms.validation import run_quality_gate

from ..validation import corpus_builder as cb

CHROMIUM = os.environ.get("GADMS_CHROMIUM", "/usr/bin/chromium")
PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'
NAME = "<img src=x onerror=window.__pwned=1>"  # the payload that fits in a file name (no slash)
SHOWN = PAYLOAD.split('"')[0]  # the report quotes captions as JSON: the quotes come back as \"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's, driven by Playwright)."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions"]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


def _offline(route: Any) -> None:
    """Let local requests through; refuse the rest (the Data Docs' CDN stylesheets and scripts)."""
    url = route.request.url
    if url.startswith("file:") or url.startswith("http://127.0.0.1:"):
        route.continue_()
    else:
        route.abort()


def _open(browser: Any, url: str) -> Any:
    """A new tab showing ``url``, loaded (an ``<img onerror>`` in it has fired by then)."""
    page = browser.new_page()
    page.route("**/*", _offline)
    page.goto(url, wait_until="load")
    return page


def _pwned(page: Any) -> bool:
    """Whether any script of the hostile text ran in the page."""
    return page.evaluate("typeof window.__pwned") != "undefined"


def test_the_gate_report_and_the_data_docs_show_hostile_captions_as_text(tmp_path, browser):
    samples = cb.edit_captions(cb.clean_samples(60), 3, lambda caption, n: f"{caption} It is probably {PAYLOAD}")
    data = cb.write_corpus(tmp_path / f"corpus {NAME}", samples)
    result = run_quality_gate(data, ValidationConfig(), tmp_path / "gate")
    assert result.failed_checks == ["no_speculation"]  # so the hostile captions are the pages' examples
    for written in (tmp_path / "gate" / "report.html", *(tmp_path / "gate" / "history").glob("*.html")):
        page = _open(browser, written.as_uri())
        text = page.inner_text("body")
        assert SHOWN in text and f"corpus {data}" in text and not _pwned(page), written
    docs = sorted((tmp_path / "gate" / "data_docs").rglob("*.html"))
    shown = []
    for written in docs:
        page = _open(browser, written.as_uri())
        assert not _pwned(page), written
        shown.append(PAYLOAD in page.inner_text("body"))
    assert len(docs) >= 3 and any(shown), "the failing captions are shown in the validation page"


@pytest.fixture(scope="module")
def search_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The search app on 127.0.0.1 over an index whose image, folder and model names are hostile; its URL."""
    import uvicorn

    from gadms.search.build import build_index
    from gadms.search.index import open_index
    from gadms.search.model import load_search_model
    from gadms.search.sources import folder_gallery
    from gadms.search.web import create_app

    root = tmp_path_factory.mktemp("search")
    images = root / "images" / NAME
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        (images / f"{i} {NAME}.jpg").write_bytes(jpeg_bytes(rng.integers(0, 255, (96, 48, 3), dtype=np.uint8), 90))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval()
    weights = save_model(model, root / f"model {NAME}" / "model.safetensors")
    searcher = load_search_model(str(weights), params_from_dict({}), "cpu")
    build_index(root / "index", folder_gallery(root / "images"), searcher, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(open_index(root / "index"), searcher), port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_search_page_shows_hostile_paths_model_names_and_queries_as_text(search_page, browser):
    page = _open(browser, search_page + "/")
    assert NAME in page.inner_text("#model") and not _pwned(page)
    page.fill("#q", PAYLOAD)
    page.press("#q", "Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('img.result').length == 4 && "
        "[...document.querySelectorAll('img.result')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert PAYLOAD in page.inner_text("#status")
    titles = [page.locator("img.result").nth(i).get_attribute("title") for i in range(4)]
    assert all(title and f"/{NAME}/" in title and title.endswith(f" {NAME}.jpg") for title in titles), titles
    assert page.locator("#results img").count() == 4 and page.locator("#results script").count() == 0
    assert not _pwned(page)


def test_the_search_page_runs_only_its_own_script(search_page):
    """Defence in depth: the page's Content-Security-Policy allows its one script by hash and nothing inline."""
    import httpx

    policy = httpx.get(search_page + "/").headers["content-security-policy"]
    assert "default-src 'none'" in policy and re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+';", policy)
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", PAGE + SCRIPT)


MATH = "a man in a $x^{$ coat with $\\alpha$ shoes"  # matplotlib would parse $...$ as math: one raises, one is α


def test_figure_captions_are_drawn_as_text(tmp_path):
    """The figures logged to MLflow draw queries and caption words literally (a ``$`` span is no formula)."""
    from gadms.model.figures import token_score_figure
    from gadms.tracking.figures import retrieval_examples_figure

    figure = retrieval_examples_figure(MATH, [np.zeros((32, 16, 3), dtype=np.uint8)], [True])
    figure.savefig(tmp_path / "examples.png")
    assert MATH in figure.get_suptitle()
    decoder = {1: "$x^{$</w>", 2: "$\\alpha$</w>"}
    tokens, scores = torch.tensor([[1, 2]]), torch.tensor([[0.2, 0.9]])
    assert token_score_figure(tokens, scores, decoder, tmp_path / "words.png", title=MATH).stat().st_size > 0


def test_the_gate_summary_artifact_keeps_hostile_captions_inside_its_code_block():
    """Prefect renders the gate's artifact as Markdown: a caption's backticks must not close the code block."""
    from gadms.markdown import code_block

    summary = f'no_speculation FAIL: 00000/000001: "``` {PAYLOAD} ````"'
    block = code_block(summary)
    fence = block.splitlines()[0]
    assert set(fence) == {"`"} and len(fence) == 5 and block == f"{fence}\n{summary}\n{fence}"
    assert code_block("plain") == "```\nplain\n```"
