"""The search page: a FastAPI app serving one plain HTML page, a JSON search endpoint and the gallery images.

``GET /`` is the page (a text box; results appear as images with rank and
score; the model version and the search method are in the header), ``GET
/api/search?q=TEXT&k=K`` answers like ``gadms search --json`` (plus each
result's ``row``), ``GET /image/ROW`` is an indexed image, ``GET /api/info``
says which index, model and method are served. When the index's folder is
rebuilt or extended, the app switches to the new index (and its model) without
a restart (see :mod:`gadms.search.live`). Errors answer
``{"detail": "one line"}`` (invalid parameters too, status 422). Started by
``gadms serve`` on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import mimetypes
import tarfile
import threading

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gadms.safe_files import UnsafeFile
from gadms.search.index import SearchIndex
from gadms.search.live import LiveIndex
from gadms.search.model import SearchError, SearchModel, TextSearcher
from gadms.search.query import run_queries
from gadms.search.sources import read_source

MAX_K = 100

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gadms person search</title>
<style>
 body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; }}
 header {{ color: #444; margin-bottom: 1em; }}
 #q {{ width: 32em; font-size: 1.1em; padding: .3em; }}
 #results {{ display: flex; flex-wrap: wrap; gap: .8em; margin-top: 1em; }}
 figure {{ margin: 0; text-align: center; font-size: .85em; }}
 figure img {{ height: 192px; border: 3px solid #2b83ba; display: block; }}
 #status {{ color: #666; margin-top: .5em; }}
</style></head>
<body>
<header><h2>Person search</h2>
 <span id="model">model <b>{model}</b></span> &middot; <span id="count">{count} images</span> &middot;
 <span id="method">{method}</span></header>
<form id="form"><input id="q" name="q" placeholder="a woman in a red jacket and orange trousers" autofocus>
 <input id="k" name="k" type="number" value="{k}" min="1" max="{max_k}" style="width:4em">
 <button type="submit">Search</button></form>
<div id="status"></div>
<div id="results"></div>
<script>{script}</script>
</body></html>
"""

# The page's only script. Results go into the page with textContent and attributes, never parsed as HTML.
SCRIPT = """
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = document.getElementById("q").value, k = document.getElementById("k").value;
  const status = document.getElementById("status"), results = document.getElementById("results");
  status.textContent = "searching...";
  const response = await fetch("/api/search?" + new URLSearchParams({q: q, k: k}));
  const body = await response.json().catch(() => ({detail: response.status + " " + response.statusText}));
  if (!response.ok) { status.textContent = "error: " + body.detail; results.replaceChildren(); return; }
  status.textContent = body.results.length + " results for \\u201c" + body.query + "\\u201d";
  results.replaceChildren(...body.results.map((r) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = "/image/" + r.row; img.alt = r.source; img.title = r.source; img.className = "result";
    const caption = document.createElement("figcaption");
    caption.textContent = "#" + r.rank + "  " + r.score.toFixed(3);
    figure.append(img, caption);
    return figure;
  }));
});
"""
# Only that script may run (allowed by its hash): were a caption or path ever parsed as HTML, a script or
# event handler in it would still be refused by the browser.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src 'sha256-{base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()}'; "
    "style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def create_app(
    index: SearchIndex, searcher: SearchModel | TextSearcher, top_k: int = 10, live: LiveIndex | None = None
) -> FastAPI:
    """The search app over an opened index and its (checked) model.

    Args:
        index: the index.
        searcher: its model.
        top_k: results the page asks for by default.
        live: follows rebuilds of the index's folder (see :mod:`gadms.search.live`); None serves ``index`` only.

    Returns:
        The FastAPI application.
    """
    app = FastAPI(title="gadms person search", docs_url=None, redoc_url=None)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    lock = threading.Lock()  # one query at a time through the model
    served = live or LiveIndex(index, searcher, None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        now = served.current()[0]
        method, recall = _method(now)
        described = f"{method} search" + (f" (recall@10 {recall:.3f})" if recall is not None else "")
        shown = {"model": html.escape(now.meta.model.label), "count": len(now), "method": html.escape(described)}
        text = PAGE.format(**shown, k=top_k, max_k=MAX_K, script=SCRIPT)
        return HTMLResponse(text, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/api/info")
    def info() -> dict:
        now = served.current()[0]
        method, recall = _method(now)
        about = {"index": str(now.directory), "model": now.meta.model.label, "weights": now.meta.model.digest}
        return about | {"count": len(now), "method": method} | ({"recall": recall} if recall is not None else {})

    @app.get("/api/search")
    def search(q: str = Query(..., description="the text query"), k: int = Query(top_k, ge=1, le=MAX_K)) -> dict:
        now, model = served.current()  # one pair for the whole request
        try:
            with lock:
                run = run_queries(now, model, [q], k)
        except SearchError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        body = run.to_json(now.meta.model.label)[0]
        for item, hit in zip(body["results"], run.results[0].hits):
            item["row"] = hit.row
        return body

    @app.get("/image/{row:path}")
    def image(row: str) -> Response:
        return _indexed_image(served.current()[0], row)

    return app


def _indexed_image(index: SearchIndex, row: str) -> Response:
    """The image of an index row, only while it is what was indexed (see ``read_source``); anything else is 404."""
    digits = row.lstrip("0") or "0"  # int() refuses strings of over 4300 digits: no row number is that long
    if not row.isascii() or not row.isdigit() or len(digits) > 20 or not 0 <= int(digits) < len(index):
        raise HTTPException(status_code=404, detail=f"no row {row[:40]!r} (the index has {len(index)})")
    record = index.records[int(row)]
    try:
        data = read_source(record)
    except (OSError, tarfile.TarError, UnsafeFile):
        raise HTTPException(status_code=404, detail=f"row {row}: no longer the image that was indexed") from None
    name = "sample.jpg" if "shard" in record else record["source"]  # curated shards hold JPEG crops
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(data, media_type=kind)


def _method(index: SearchIndex) -> tuple[str, float | None]:
    """``("exact", None)``, or ``("approximate", build-time recall@10)`` when the index has a FAISS index."""
    if index.approximate is None:
        return "exact", None
    return "approximate", round(index.approximate.recall, 4)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """A 422 whose ``detail`` is one readable line (FastAPI's default is a list of objects)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in errors]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)
