"""`mlflow models serve -m models:/NAME@champion` answers /invocations with embeddings for text and image rows."""

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from gadms.data.benchmarks import load_benchmark
from gadms.eval.evaluate import encode_images, encode_texts
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.pyfunc import embed_frame
from gadms.tracking.registry import register_and_maybe_promote
from gadms.tracking.store import tracking_uri

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = ["A man in a red t-shirt and blue jeans.", "A woman carrying a yellow bag."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rows_may_mix_text_and_images_but_each_sets_exactly_one(tiny_model, bench_root):
    path = load_benchmark("cuhk-pedes", bench_root, "test").images[0]
    frame = pd.DataFrame({"text": [CAPTIONS[0], None], "image": [None, path.read_bytes()]})
    got = embed_frame(tiny_model, frame)
    np.testing.assert_allclose(got[0], encode_texts(tiny_model, CAPTIONS[:1]).numpy()[0], atol=1e-5)
    np.testing.assert_allclose(got[1], encode_images(tiny_model, [path]).numpy()[0], atol=1e-5)
    with pytest.raises(ValueError, match="row 1: set exactly one .*neither"):
        embed_frame(tiny_model, pd.DataFrame({"text": ["a", None], "image": [None, None]}))


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(new_params, tiny_model, bench_root, tmp_path):
    params = new_params()
    with tracked_run(params, "serve", "finetune", None) as run:
        run.log_model(tiny_model)
    register_and_maybe_promote(run.run_id, "model", params, "cuhk-pedes", 10.0)
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(params),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    uri = f"models:/{params.tracking.registered_model}@{params.tracking.champion_alias}"
    mlflow_cli = shutil.which("mlflow", path=bin_dir) or "mlflow"
    proc = subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mlflow models serve did not come up: {proc.stdout.read()[-2000:]}")
            time.sleep(0.3)
        path = load_benchmark("cuhk-pedes", bench_root, "test").images[0]
        image = base64.b64encode(path.read_bytes()).decode()
        text = httpx.post(
            base + "/invocations",
            json={"dataframe_split": {"columns": ["text"], "data": [[c] for c in CAPTIONS]}},
            timeout=30,
        )
        images = httpx.post(
            base + "/invocations", json={"dataframe_split": {"columns": ["image"], "data": [[image]]}}, timeout=30
        )
        both = httpx.post(
            base + "/invocations", json={"dataframe_records": [{"image": image, "text": "x"}]}, timeout=30
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert text.status_code == 200 and images.status_code == 200, (text.text, images.text)
    want_text = encode_texts(tiny_model, CAPTIONS).numpy()
    np.testing.assert_allclose(np.array(text.json()["predictions"]), want_text, atol=1e-5)
    np.testing.assert_allclose(
        np.array(images.json()["predictions"]), encode_images(tiny_model, [path]).numpy(), atol=1e-5
    )
    assert both.status_code >= 400 and "exactly one" in both.text
