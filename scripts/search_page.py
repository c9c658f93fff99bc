"""The README's screenshot of the search page: `gadms serve INDEX` on 127.0.0.1, a query typed in headless Chromium.

    python scripts/search_page.py INDEX [--query "a woman in a red coat"] [--out docs/search_page.png]

INDEX is any index built by `gadms index` (the README's is the demo's CUHK-PEDES test gallery). Needs Debian's
chromium (`apt-get install chromium`) and Playwright (a dev dependency); nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("GADMS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(index: Path, port: int) -> subprocess.Popen[str]:
    """`gadms serve INDEX` in the background, once it answers."""
    command = [sys.executable, "-m", "gadms", "serve", str(index), "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1).raise_for_status()
            return server
        except httpx.HTTPError:
            if server.poll() is not None:
                raise SystemExit(f"error: gadms serve exited: {server.stdout.read() if server.stdout else ''}")
            time.sleep(0.2)
    server.kill()
    raise SystemExit("error: gadms serve did not answer within 60 s")


def shoot(index: Path, query: str, top_k: int, out: Path) -> None:
    """Type ``query`` into the page served for ``index`` and save the page with its ranked images as ``out``."""
    port = _free_port()
    server = _serve(index, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 620})
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#k", str(top_k))
            page.fill("#q", query)
            page.press("#q", "Enter")
            page.wait_for_function(
                f"document.querySelectorAll('img.result').length == {top_k} && "
                "[...document.querySelectorAll('img.result')].every(i => i.complete && i.naturalWidth > 0)"
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--query", default="a woman in a red coat and black trousers")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("docs/search_page.png"))
    args = parser.parse_args()
    shoot(args.index, args.query, args.top_k, args.out)


if __name__ == "__main__":
    main()
