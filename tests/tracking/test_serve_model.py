"""`gadms serve-model`, run exactly as the README writes it: the champion's embeddings over REST from the project's
store, without an activated environment, on a port of its own, nothing left behind."""

import base64
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from mlflow.exceptions import MlflowException

from gadms.data.benchmarks import load_benchmark
from gadms.eval.evaluate import encode_images
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.pyfunc import embed_frame
from gadms.tracking.registry import register_and_maybe_promote
from gadms.tracking.store import ensure_experiment, tracking_uri, using_store

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CAPTIONS = ["A man in a red t-shirt and blue jeans.", "A woman carrying a yellow bag."]


def readme_command() -> list[str]:
    """The one `gadms serve-model` line of the README's bash blocks, as argv (its comment dropped)."""
    lines, in_bash = [], False
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            in_bash = line.strip() == "```bash" and not in_bash
            continue
        if in_bash and line.strip().startswith("gadms serve-model"):
            lines.append(line.strip())
    assert len(lines) == 1, f"the README shows {len(lines)} `gadms serve-model` command lines: {lines}"
    return shlex.split(lines[0], comments=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _project(folder: Path, params) -> Path:
    """A working directory whose params.yaml points at ``params``' store and names; returns the folder."""
    folder.mkdir(parents=True)
    raw = {
        "paths": {"mlruns_dir": str(params.paths.mlruns_dir)},
        "tracking": {"experiment": params.tracking.experiment, "registered_model": params.tracking.registered_model},
        "model": {"context_length": params.model.context_length},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder


def _env() -> dict[str, str]:
    """The shell of a user who did not activate .venv: its bin folder is not on PATH, no tracking URI is set."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the server on the CPU, like the in-process reference (TF32 differs ~1e-3)
    return env


def _gadms(argv: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    assert argv[0] == "gadms"
    return subprocess.run(
        [str(BIN / "gadms"), *argv[1:]], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def champion(new_params, tiny_model):
    """The tiny model registered and promoted to champion; returns its params."""
    params = new_params()
    with tracked_run(params, "serve-model", "finetune", None) as run:
        run.log_model(tiny_model)
    assert register_and_maybe_promote(run.run_id, "model", params, "cuhk-pedes", 10.0).promoted
    return params


def test_both_columns_in_a_row_is_a_400_that_says_to_send_one(tiny_model):
    with pytest.raises(MlflowException) as caught:
        embed_frame(tiny_model, pd.DataFrame({"text": ["a man"], "image": [b"x"]}))
    assert caught.value.get_http_status_code() == 400 and isinstance(caught.value, ValueError)
    assert "row 0: set exactly one of the columns 'text' or 'image' (got both)" in caught.value.message
    assert "send one of them per row" in caught.value.message


def test_no_store_is_one_line_and_creates_nothing(new_params, tmp_path):
    params = new_params(paths={"mlruns_dir": str(tmp_path / "never-made")})
    project = _project(tmp_path / "project", params)
    result = _gadms(readme_command(), project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: models:/")
    assert "no MLflow store at" in result.stderr and "gadms pipeline" in result.stderr
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]
    assert not (tmp_path / "never-made").exists()


def test_no_champion_is_one_line(new_params, tmp_path):
    params = new_params()
    with using_store(params) as uri:
        ensure_experiment(params.tracking.experiment, uri)  # the store exists; nothing is registered under the name
    project = _project(tmp_path / "project", params)
    result = _gadms(readme_command(), project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert f"models:/{params.tracking.registered_model}@champion" in result.stderr
    assert tracking_uri(params) in result.stderr and "gadms pipeline" in result.stderr
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]


def test_a_taken_port_is_one_line(champion, tmp_path):
    project = _project(tmp_path / "project", champion)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _gadms([*readme_command(), "--port", str(port)], project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use); pick another port "
        "with --port"
    )


def _wait_up(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(base + "/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gadms serve-model did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def _all_gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
                return True
        except psutil.NoSuchProcess:
            continue
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_the_readme_command_serves_the_champion_and_leaves_nothing(champion, tiny_model, bench_root, tmp_path):
    assert readme_command()[:2] == ["gadms", "serve-model"]
    default = readme_command()
    project = _project(tmp_path / "project", champion)
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "gadms"), *default[1:], "--port", str(port)],
            cwd=project,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc, log)
        children = psutil.Process(proc.pid).children(recursive=True)
        path = load_benchmark("cuhk-pedes", bench_root, "test").images[0]
        image = base64.b64encode(path.read_bytes()).decode()
        split = {"dataframe_split": {"columns": ["text"], "data": [[c] for c in CAPTIONS]}}
        text = httpx.post(base + "/invocations", json=split, timeout=60)
        one_image = {"dataframe_split": {"columns": ["image"], "data": [[image]]}}
        images = httpx.post(base + "/invocations", json=one_image, timeout=60)
        both = httpx.post(
            base + "/invocations", json={"dataframe_records": [{"image": image, "text": "x"}]}, timeout=60
        )
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = log.read_text().splitlines()[0]
    name = champion.tracking.registered_model
    assert first.startswith(f"serving models:/{name}@champion ({name} v1) from {tracking_uri(champion)} on {base}")
    assert text.status_code == 200 and images.status_code == 200, (text.text, images.text)
    with using_store(champion):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion", model_config={"device": "cpu"})
    want_text = pyfunc.predict(pd.DataFrame({"text": CAPTIONS}))
    got_text = np.array(text.json()["predictions"], dtype=np.float32)
    assert got_text.shape == want_text.shape == (2, 64)
    np.testing.assert_allclose(got_text, want_text, atol=1e-5)
    got_image = np.array(images.json()["predictions"], dtype=np.float32)
    assert got_image.shape == (1, 64)
    np.testing.assert_allclose(got_image, encode_images(tiny_model, [path]).numpy(), atol=1e-5)
    assert both.status_code == 400
    message = both.json()["message"]
    assert "row 0: set exactly one of the columns 'text' or 'image' (got both)" in message
    assert "send one of them per row" in message and "unexpected error" not in message
    assert status == 143  # stopped by SIGTERM
    assert children and _all_gone(children, 15)  # the model server, its uvicorn workers, the watchdog
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]  # no stray mlflow.db or other file
