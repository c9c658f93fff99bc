"""Generated hostile HTTP requests against one real ``gadms serve``: never a 5xx, never a traceback, a short
error body, the server alive afterwards and its index and gallery unchanged.

Requests are written byte for byte on a socket (no client tidies a path, a header or a method first): every
route of :mod:`gadms.search.web` (``/``, ``/api/info``, ``/api/search``, ``/image/ROW``) and unknown ones, with
generated query texts (unicode, control characters, ``%00``, JSON, very long), counts (negative, huge,
fractional, not numbers), path segments (``..``, encoded slashes, huge numbers), methods and headers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from gadms.config import ModelConfig, params_from_dict
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.search.build import build_index
from gadms.search.model import load_search_model
from gadms.search.sources import folder_gallery
from tests.serving import wait_until_served

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 15  # seconds any one request may take: a hang fails the example instead of the suite
MAX_ERROR_BODY = 2000  # bytes: an error is one line, not a page or a dump
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _jpeg(seed: int) -> bytes:
    """A real 32x64 JPEG of noise."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256 of its bytes or link target, mtime in ns) of everything under ``root``."""
    digest = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content = os.readlink(path).encode()
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = b"<dir>"
        digest[str(path.relative_to(root))] = (hashlib.sha256(content).hexdigest(), info.st_mtime_ns)
    return digest


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """``gadms serve`` over an index of three images, once per module; yields a dict of what the tests need."""
    root = tmp_path_factory.mktemp("http")
    gallery, index = root / "gallery", root / "index"
    gallery.mkdir()
    for k in range(3):
        (gallery / f"img{k}.jpg").write_bytes(_jpeg(k))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval()
    model_file = save_model(model, root / "model.safetensors")
    searcher = load_search_model(str(model_file), params_from_dict({}), "cpu")
    build_index(index, folder_gallery(gallery), searcher, progress=False)
    before = {"gallery": _tree_digest(gallery), "index": _tree_digest(index)}
    port, log = _free_port(), root / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "gadms", "serve", str(index), "--port", str(port), "--device", "cpu"]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_until_served(proc, base, log)
    yield {"proc": proc, "port": port, "base": base, "log": log, "gallery": gallery, "index": index, "before": before}
    proc.terminate()
    proc.wait(timeout=10)


def _request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` as it is; (status, lower-cased headers, body) of the answer, read until the server closes."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        conn.sendall(raw)
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    assert data, f"no answer at all to {raw[:300]!r}"
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
    return int(status_line.split()[1]), headers, body


def _encoded(text: str) -> str:
    """``text`` percent-encoded as a query value (UTF-8, lone surrogates replaced)."""
    return quote(text.encode("utf-8", "replace"), safe="")


TEXTS = st.one_of(
    st.text(max_size=60).map(_encoded),
    st.sampled_from(["%00", "a%00b", "%", "%ZZ", "%C3%28", "%ED%A0%80", "+", "%20", "%0d%0aX-Injected:%201"]),
    st.sampled_from(['{"q": 1}', '"]}', "[1,2]", "\\u0000", "<script>alert(1)</script>", "${jndi:ldap://x}"]).map(
        _encoded
    ),
    st.integers(1000, 20000).map(lambda n: "a" * n),
    st.integers(200, 3000).map(lambda n: "%E2%82%AC" * n),
)
COUNTS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", "0", "-1", "101", "100", "1", "1.5", "1e3", "nan", "inf", "0x10", "１", "٣", "1_0", " 5"]),
    st.sampled_from(["9" * 5000, "true", "null", "[]", "%00", "5%00", "-0"]),
)
# Rows of over 4300 digits (past int()'s limit): test_an_image_row_of_over_4300_digits_is_a_404.
SEGMENTS = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["..", "../..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "0/../1", "0%2F1", ""]),
    st.sampled_from(
        ["0x1", "+1", " 1", "1 ", "%201", "１", "٣", "0" * 4200 + "1", "9" * 4301, "%00", "0%00", "1.0", "-0"]
    ),
    st.text(max_size=30).map(_encoded),
)
METHODS = st.sampled_from(["GET"] * 6 + ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "FOO"])


@st.composite
def _targets(draw: st.DrawFn) -> str:
    """A request target: a route of the app or an unknown one, with a hostile query string."""
    route = draw(
        st.one_of(
            st.sampled_from(["/", "/api/info", "/api/search", "/api/search/", "//api/search", "/api", "/image"]),
            st.sampled_from(["/image/", "/docs", "/redoc", "/openapi.json", "/favicon.ico", "/%2e%2e/", "/.."]),
            SEGMENTS.map(lambda s: "/image/" + s),
            st.text(max_size=30).map(lambda t: "/" + _encoded(t)),
        )
    )
    params = draw(
        st.lists(
            st.one_of(
                TEXTS.map(lambda t: "q=" + t),
                COUNTS.map(lambda c: "k=" + _encoded(c)),
                st.sampled_from(["q", "k", "q=", "k=", "=", "&", "q[]=a", "q=a&q=b", "k=1&k=2"]),
            ),
            max_size=3,
        )
    )
    return route + ("?" + "&".join(params) if params else "")


HEADERS = st.lists(
    st.sampled_from(
        ["Content-Type: application/json", "Content-Type: \x01junk/;;;=", "Content-Type: multipart/form-data"]
        + ["Accept: */*;q=abc", "Accept-Encoding: gzip, br, zstd, x" * 3, "Range: bytes=9999999-", "Range: bytes=-"]
        + ["Cookie: " + "a=b; " * 200, "X-Forwarded-For: ../../", "Origin: null", "If-None-Match: *", "Expect: junk"]
        + ["X-" + "h" * 4000 + ": v", "Authorization: Basic %%%", "Transfer-Encoding: gzip, chunked"]
    ),
    max_size=3,
)
BODIES = st.one_of(st.just(b""), st.binary(max_size=200), st.just(b'{"q": "a man", "k": 5}'))


def _assert_short_error(status: int, headers: dict[str, str], body: bytes) -> None:
    """A 4xx answer is one line: a small JSON ``{"detail": ...}`` or one line of text, never a traceback."""
    assert len(body) <= MAX_ERROR_BODY, (status, body[:300])
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    if body and headers.get("content-type", "").startswith("application/json"):
        detail = json.loads(text)["detail"]
        assert isinstance(detail, str) and len(detail.splitlines()) <= 1, text
    else:
        assert len(text.strip().splitlines()) <= 1, text


@SETTINGS
@given(method=METHODS, target=_targets(), headers=HEADERS, body=BODIES)
@example(method="GET", target="/api/search?q=%00&k=5", headers=[], body=b"")
@example(method="GET", target="/image/..%2F..%2Fetc%2Fpasswd", headers=[], body=b"")
@example(method="POST", target="/api/search?q=a", headers=["Content-Type: application/json"], body=b"{")
def test_no_hostile_request_gets_a_5xx_or_a_long_error(server, method, target, headers, body):
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
    status, answer_headers, answer = _request(server["port"], raw)
    assert status < 500, (method, target, headers, status, answer[:500])
    if status >= 400:
        _assert_short_error(status, answer_headers, answer)
    assert b"root:" not in answer  # nothing from outside the gallery


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace"))))
@example(raw=b"GET /api/search?q=a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n")
@example(raw=b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
@example(raw=b"GET / HTTP/9.9\r\n\r\n")
def test_garbage_on_the_socket_gets_a_4xx_or_a_closed_connection(server, raw):
    """Bytes that are not HTTP at all: the server answers below 500 or just closes; it never hangs or crashes."""
    chunks = []
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=TIMEOUT) as conn:
        conn.sendall(raw + b"\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)  # nothing more comes: an incomplete request must not keep it waiting
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    data = b"".join(chunks)
    if data:
        status = int(data.split(b"\r\n", 1)[0].split()[1])
        assert status < 500, data[:500]
        assert b"Traceback" not in data
    assert server["proc"].poll() is None, "the server died"


def test_the_server_survives_it_all_unchanged(server):
    """After the generated requests: the server still answers a normal query, logged no traceback, touched no input."""
    assert server["proc"].poll() is None, server["log"].read_text(errors="replace")
    answer = httpx.get(server["base"] + "/api/search", params={"q": "a man in a blue shirt", "k": 2}, timeout=TIMEOUT)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 2, answer.text
    image = httpx.get(f"{server['base']}/image/{answer.json()['results'][0]['row']}", timeout=TIMEOUT)
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    assert "Traceback" not in server["log"].read_text(errors="replace")
    assert _tree_digest(server["gallery"]) == server["before"]["gallery"]
    assert _tree_digest(server["index"]) == server["before"]["index"]


@settings(phases=[Phase.explicit], deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(digits=st.integers(4301, 10_000))
@example(digits=4301)
def test_an_image_row_of_over_4300_digits_is_a_404(server, digits):
    """A row number past what ``int()`` converts (4300 digits) is a 404 like any row the index lacks, not a 500."""
    raw = f"GET /image/{'9' * digits} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status, headers, body = _request(server["port"], raw)
    assert status == 404, (status, body[:200])
    _assert_short_error(status, headers, body)
