"""A running `gadms serve` follows its index through a retrain: the pipeline's showcase rebuilds the index in place
for a new champion and the server answers with the new model, without a restart and without a failed request."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gadms.config import params_from_dict
from gadms.search.index import open_index
from gadms.search.model import load_search_model
from gadms.search.query import run_queries
from gadms.search.showcase import search_showcase
from tests.serving import wait_until_served

REPO = Path(__file__).resolve().parents[2]
PARAMS = params_from_dict({})
QUERY = "a woman in a red top and black trousers"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected(index_dir: Path, model: Path) -> dict:
    """What the in-process search API answers for QUERY with ``model`` over the index now at ``index_dir``."""
    index = open_index(index_dir)
    return run_queries(index, load_search_model(str(model), PARAMS, "cpu"), [QUERY], 5).to_json(index.meta.model.label)[
        0
    ]


def _answer(base: str) -> tuple[int, dict]:
    response = httpx.get(base + "/api/search", params={"q": QUERY, "k": 5}, timeout=60)
    body = response.json()
    for item in body.get("results", []):
        item.pop("row", None)
    return response.status_code, body


def _start(index_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [sys.executable, "-m", "gadms", "serve", str(index_dir), "--port", str(port), "--device", "cpu"]
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    wait_until_served(proc, f"http://127.0.0.1:{port}", log, 90)
    return proc


class _Hammer(threading.Thread):
    """Asks the server QUERY over and over, keeping every outcome."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.stop, self.outcomes = base, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.outcomes.append(_answer(self.base))
            except httpx.HTTPError as exc:
                self.outcomes.append((0, {"error": repr(exc)}))


@pytest.mark.slow
def test_serve_switches_to_the_index_rebuilt_for_a_new_champion_without_a_restart(
    tmp_path, model_file, other_model_file, bench_root
):
    out_dir = tmp_path / "work" / "search" / "cuhk-pedes"
    search_showcase(PARAMS, str(model_file), "cuhk-pedes", bench_root, out_dir, queries=1)  # champion A's index
    index_dir = out_dir / "index"
    before = _expected(index_dir, model_file)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(index_dir, port, tmp_path / "serve.log")
    hammer = _Hammer(base)
    try:
        assert _answer(base) == (200, before)
        hammer.start()
        search_showcase(PARAMS, str(other_model_file), "cuhk-pedes", bench_root, out_dir, queries=1)  # the retrain
        after = _expected(index_dir, other_model_file)
        assert after["model"] != before["model"] and after["results"] != before["results"]
        deadline = time.monotonic() + 60
        while _answer(base) != (200, after):
            assert time.monotonic() < deadline, f"still not serving model B: {(tmp_path / 'serve.log').read_text()}"
            time.sleep(0.5)
        time.sleep(1)  # a few more requests on the new index
        hammer.stop.set()
        hammer.join(timeout=60)
        assert server.poll() is None  # the same process, never restarted
        assert httpx.get(base + "/api/info").json()["weights"] == open_index(index_dir).meta.model.digest
    finally:
        hammer.stop.set()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    outcomes = hammer.outcomes
    assert outcomes and all(status == 200 for status, _ in outcomes), [o for o in outcomes if o[0] != 200][:3]
    assert all(body in (before, after) for _, body in outcomes)  # each answer wholly from A or wholly from B
    switched = [body == after for _, body in outcomes]
    assert switched[-1] and switched == sorted(switched)  # once on B, never back to A
    assert sorted(p.name for p in out_dir.iterdir() if p.name.startswith(".")) == [".index.lock"]
