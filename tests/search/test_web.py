"""`gadms serve`: a real server on 127.0.0.1, called over HTTP and used in a real headless Chromium."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gadms.config import params_from_dict
from gadms.search.build import build_index
from gadms.search.model import load_search_model
from gadms.search.sources import folder_gallery

CHROMIUM = os.environ.get("GADMS_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_file, image_dir):
    """`gadms serve INDEX` in a subprocess; yields its base URL, stopped after the module."""
    out = tmp_path_factory.mktemp("serve") / "index"
    build_index(
        out, folder_gallery(image_dir), load_search_model(str(model_file), params_from_dict({}), "cpu"), progress=False
    )
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gadms", "serve", str(out), "--port", str(port), "--top-k", "6", "--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/api/info", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(f"gadms serve exited: {proc.stdout.read()}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gadms serve did not answer within 60 s")
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_the_api_ranks_like_the_cli_and_serves_the_images(server, model_file):
    info = httpx.get(server + "/api/info").json()
    assert info["count"] == 90 and info["model"].endswith("model.safetensors")
    body = httpx.get(server + "/api/search", params={"q": "a man in a blue shirt", "k": 4}).json()
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4]
    image = httpx.get(server + f"/image/{body['results'][0]['row']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == Path(body["results"][0]["source"]).read_bytes()
    assert httpx.get(server + "/image/100000").status_code == 404
    assert httpx.get(server + "/api/search", params={"q": " "}).status_code == 400
    assert info["method"] == "exact" and "recall" not in info and body["method"] == "exact"
    invalid = httpx.get(server + "/api/search", params={"q": "a man", "k": 0})
    assert invalid.status_code == 422
    assert invalid.json() == {"detail": "k: Input should be greater than or equal to 1"}


def test_the_page_names_an_approximate_search_and_its_recall(tmp_path, model_file, image_dir):
    from fastapi.testclient import TestClient

    from gadms.search.index import open_index
    from gadms.search.web import create_app

    searcher = load_search_model(str(model_file), params_from_dict({}), "cpu")
    build_index(tmp_path / "index", folder_gallery(image_dir), searcher, approx_threshold=10, progress=False)
    index = open_index(tmp_path / "index")
    client = TestClient(create_app(index, searcher))
    recall = round(index.approximate.recall, 4)
    assert f'<span id="method">approximate search (recall@10 {recall:.3f})</span>' in client.get("/").text
    assert client.get("/api/info").json()["recall"] == recall
    body = client.get("/api/search", params={"q": "a man", "k": 3}).json()
    assert (body["method"], body["recall"], len(body["results"])) == ("approximate", recall, 3)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_typing_a_query_in_a_browser_shows_the_ranked_images(server, tmp_path):
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(server + "/")
        info = httpx.get(server + "/api/info").json()
        assert page.inner_text("#model") == f"model {info['model']}" and page.inner_text("#count") == "90 images"
        assert page.inner_text("#method") == "exact search"
        page.fill("#q", "a man")
        page.fill("#k", "")  # the page's own check lets an empty count through to the server: a 422
        page.press("#q", "Enter")
        # a function, not an expression: the page's Content-Security-Policy refuses eval
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('error')")
        assert page.inner_text("#status").startswith("error: k: Input should be a valid integer")
        page.fill("#k", "6")
        page.fill("#q", "a woman in a red coat")
        page.press("#q", "Enter")
        page.wait_for_function(
            "() => document.querySelectorAll('img.result').length == 6 && "
            "[...document.querySelectorAll('img.result')].every(i => i.complete && i.naturalWidth > 0)"
        )
        captions = page.locator("figcaption").all_inner_texts()
        assert [c.split()[0] for c in captions] == [f"#{i}" for i in range(1, 7)]
        scores = [float(c.split()[1]) for c in captions]
        assert scores == sorted(scores, reverse=True)
        api = httpx.get(server + "/api/search", params={"q": "a woman in a red coat", "k": 6}).json()
        assert page.locator("img.result").first.get_attribute("title") == api["results"][0]["source"]
        shot = os.environ.get("GADMS_SEARCH_SCREENSHOT")
        page.screenshot(path=shot or str(tmp_path / "page.png"), full_page=True)
        browser.close()
