"""README screenshots from real runs: two pipeline runs with different params, the MLflow UI and the Prefect UI.

In a temporary folder (a fresh git repository with this checkout's params.yaml) this script starts a Prefect
server (own PREFECT_HOME, free port on 127.0.0.1), runs the pipeline twice at the smallest settings (the test
suite's; the second run with other learning rates, so both train), registers the weekly-retraining deployment,
starts ``mlflow ui`` on the runs' store (free port on 127.0.0.1), and photographs with headless Chromium:

- ``mlflow_runs.png``: the runs table, filtered to the two ``pipeline`` runs, with their headline metric columns;
- ``mlflow_compare.png``: MLflow's compare view of the two pipeline runs;
- ``prefect_deployment.png``: the deployment's page in the Prefect UI with its upcoming scheduled runs.

Everything started is stopped at the end; nothing leaves 127.0.0.1. Takes a few minutes on a laptop CPU.

Usage: ``python scripts/screenshots.py [--out docs/img] [--work DIR]`` (``--work`` keeps the runs there).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("GADMS_CHROMIUM", "/usr/bin/chromium")
SMALL = [
    "pipeline.web_scenes=60",
    "pipeline.benchmark_identities=12",
    "synth.shard_size=30",
    "train.epochs=2",
    "train.batch_size=16",
    "finetune.epochs=2",
    "finetune.batch_size=16",
    "train.num_workers=0",
]
SECOND = ["train.optimizer.lr=0.001", "finetune.lr=0.0002"]  # the second pipeline run's changed params
HEADLINE = ["direct/cuhk-pedes/R1", "direct/cuhk-pedes/mAP", "finetuned/cuhk-pedes/R1", "finetuned/cuhk-pedes/mAP"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    """Poll ``check()`` until truthy; raise with the log's tail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def answers(url: str) -> bool:
    """Whether ``url`` answers 200."""
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def started(command: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run ``command`` in its own process group for the block; SIGTERM (then SIGKILL) it and its children after."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def prefect_env(home: Path, api: str) -> None:
    """Point this process (and the server it starts) at a private Prefect server: own home, no telemetry."""
    os.environ.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_CLI_PROMPT": "false",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
    )
    for key in ("PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(key, None)


def fresh_repo(work: Path) -> None:
    """A git repository holding only params.yaml (what a user has after cloning and before the first run)."""
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    for key, value in (("user.email", "docs@example.invalid"), ("user.name", "docs")):
        subprocess.run(["git", "config", key, value], cwd=work, check=True)
    shutil.copy(REPO / "params.yaml", work / "params.yaml")


def run_pipelines(work: Path) -> list[Any]:
    """Two pipeline runs in ``work``, the second with ``SECOND`` (so both train and their results differ)."""
    os.chdir(work)
    sys.path.insert(0, str(REPO))
    from flows.pipeline import pipeline_flow

    results = [pipeline_flow("params.yaml", SMALL)]
    time.sleep(61)  # pipeline runs are named by the minute: two names, two rows
    results.append(pipeline_flow("params.yaml", [*SMALL, *SECOND]))
    return results


def served_deployment(api: str) -> str:
    """The id of the served ``weekly-retraining`` deployment once the scheduler has created its upcoming runs."""
    import httpx

    found = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": ["weekly-retraining"]}}})
    if found.status_code != 200 or not found.json():
        return ""
    deployment = found.json()[0]["id"]
    body = {"deployments": {"id": {"any_": [deployment]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body)
    return str(deployment) if runs.status_code == 200 and len(runs.json()) >= 3 else ""


def mlflow_experiment(work: Path) -> str:
    """The id of the experiment the pipeline runs went to."""
    from mlflow import MlflowClient

    from gadms.config import load_params
    from gadms.tracking.store import tracking_uri

    params = load_params(work / "params.yaml")
    experiment = MlflowClient(tracking_uri(params, work)).get_experiment_by_name(params.tracking.experiment)
    assert experiment is not None, "the pipeline logged no experiment"
    return str(experiment.experiment_id)


def shrink(png: Path, limit: int = 300_000) -> None:
    """Re-save a screenshot as a palette PNG when it is over ``limit`` bytes (UI colours survive 256 entries)."""
    from PIL import Image

    if png.stat().st_size <= limit:
        return
    with Image.open(png) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def pick_columns(page: Any, names: list[str]) -> None:
    """Toggle columns in the runs table's Columns menu (attributes on by default go off, metrics and params on)."""
    page.get_by_role("button", name="Columns").click()
    for name in names:
        page.get_by_text(name, exact=True).last.click()
        page.wait_for_timeout(300)
    page.keyboard.press("Escape")
    page.wait_for_timeout(1000)


def fit_headers(page: Any, prefixes: list[str]) -> None:
    """Widen the runs table's columns whose header starts with one of ``prefixes`` to their full name."""
    for prefix in prefixes:
        cells = page.locator(".ag-header-row-column .ag-header-cell", has_text=prefix)
        for index in range(cells.count()):
            cells.nth(index).locator(".ag-header-cell-resize").dblclick()  # ag-grid: size to fit
            page.wait_for_timeout(200)


def open_clean(page: Any, url: str, ready: str) -> None:
    """Open an MLflow UI page, wait for ``ready`` text, close the assistant panel, fold the sidebar if open."""
    page.goto(url, wait_until="load")
    page.wait_for_selector(f"text={ready}", timeout=60_000)
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
    if page.get_by_text("Model registry", exact=True).is_visible():  # the sidebar is unfolded
        page.get_by_role("button", name="Toggle sidebar").first.click()
    page.wait_for_timeout(1000)


def shoot_mlflow(page: Any, base: str, experiment: str, run_ids: list[str], out: Path) -> list[Path]:
    """The runs table of the two pipeline runs (headline metrics and the changed params) and their compare view."""
    search = quote("tags.stage = 'pipeline'")
    page.set_viewport_size({"width": 1600, "height": 440})
    url = f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning&searchFilter={search}"
    open_clean(page, url, "pipeline 20")
    changed = [s.split("=")[0] for s in SECOND]
    pick_columns(page, ["Dataset", "Source", "Models", *HEADLINE, *changed])
    fit_headers(page, ["direct/", "finetuned/", *changed])
    page.mouse.move(5, 430)
    runs = out / "mlflow_runs.png"
    page.screenshot(path=str(runs))
    page.set_viewport_size({"width": 1400, "height": 1010})
    ids, experiments = quote(json.dumps(run_ids)), quote(json.dumps([experiment]))
    url = f"{base}/#/compare-runs?runs={ids}&experiments={experiments}&workflowType=machine_learning"
    open_clean(page, url, HEADLINE[-1])
    page.get_by_text("Visualizations", exact=True).first.click()  # folded: the tables are the point here
    page.get_by_text("Show diff only").first.click()  # the parameters that differ, not all 18
    page.wait_for_timeout(1000)
    page.mouse.move(5, 1000)
    compare = out / "mlflow_compare.png"
    page.screenshot(path=str(compare))
    return [runs, compare]


def shoot_prefect(page: Any, ui: str, deployment_id: str, out: Path) -> Path:
    """The deployment's page on its Upcoming tab (the runs the scheduler created)."""
    page.set_viewport_size({"width": 1500, "height": 640})
    page.goto(f"{ui}/deployments/deployment/{deployment_id}", wait_until="load")
    page.wait_for_selector("text=weekly-retraining", timeout=60_000)
    page.get_by_text("Upcoming", exact=True).first.click()
    page.wait_for_selector("text=Scheduled for", timeout=60_000)
    page.wait_for_timeout(1500)
    shot = out / "prefect_deployment.png"
    page.screenshot(path=str(shot))
    return shot


def photograph(shots: Callable[[Any], list[Path]]) -> list[Path]:
    """Open headless Chromium (loopback only) and take the shots."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-extensions"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 820})
            page.route("**/*", lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort())
            return shots(page)
        finally:
            browser.close()


def main() -> None:
    """Produce the three screenshots (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gadms-shots-"))
    work = (args.work or scratch / "repo").resolve()
    fresh_repo(work)
    prefect_port, mlflow_port = free_port(), free_port()
    prefect_env(scratch / "prefect-home", f"http://127.0.0.1:{prefect_port}/api")
    server = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
    prefect_log = scratch / "prefect.log"
    with started(server, prefect_log, scratch):
        api = f"http://127.0.0.1:{prefect_port}/api"
        wait_for("the Prefect server", lambda: answers(f"{api}/health"), 180, prefect_log)
        results = run_pipelines(work)
        from gadms.config import load_params
        from gadms.tracking.store import ui_command

        ui = shlex.split(ui_command(load_params(work / "params.yaml"), work, mlflow_port))
        deploy = [str(BIN / "gadms"), "deploy", "--params", "params.yaml", *[a for v in SMALL for a in ("--set", v)]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        mlflow_log, deploy_log = scratch / "mlflow.log", scratch / "deploy.log"
        with started(ui, mlflow_log, work), started(deploy, deploy_log, work, env):
            base = f"http://127.0.0.1:{mlflow_port}"
            wait_for("the MLflow UI", lambda: answers(f"{base}/health"), 180, mlflow_log)
            deployment_id = wait_for("the deployment's upcoming runs", lambda: served_deployment(api), 180, deploy_log)
            experiment = mlflow_experiment(work)
            run_ids = [r.pipeline_run for r in results]
            prefect_ui = f"http://127.0.0.1:{prefect_port}"
            shots = photograph(
                lambda page: [
                    *shoot_mlflow(page, base, experiment, run_ids, out),
                    shoot_prefect(page, prefect_ui, deployment_id, out),
                ]
            )
    for shot in shots:
        shrink(shot)
        print(f"{shot} ({shot.stat().st_size // 1000} KB)")
    if args.work is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
