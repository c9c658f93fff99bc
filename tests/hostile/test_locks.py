"""One writer per output: a second writer of a folder stops in one line naming the holder; a killed holder
never blocks the next run. Holders are real processes; the second writer is a real process or the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from gadms.cli.train import OUT_LOCK_ENV, out_lock
from gadms.config import ModelConfig
from gadms.locks import OutputBusy, writer_lock
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model

HOLDER = textwrap.dedent(
    """
    import sys, time
    from gadms.locks import writer_lock
    with writer_lock(sys.argv[1], sys.argv[2], lock_file=f"{sys.argv[1]}/{sys.argv[3]}"):
        print("held", flush=True)
        time.sleep(120)
    """
)


def hold(folder: Path, command: str, lock_name: str = ".lock") -> subprocess.Popen:
    """A process holding ``folder``'s lock as ``command`` until it is killed (returns once the lock is held)."""
    args = [sys.executable, "-c", HOLDER, str(folder), command, lock_name]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def kill(process: subprocess.Popen) -> None:
    """SIGKILL: the holder gets no chance to release anything itself."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def gadms(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m gadms ARGS`` as a separate process."""
    return subprocess.run([sys.executable, "-m", "gadms", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model file, image folder)``: the tiny model and two small images."""
    root = tmp_path_factory.mktemp("gallery")
    torch.manual_seed(0)
    model = save_model(
        PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))), root / "m.safetensors"
    )
    (root / "images").mkdir()
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (32, 64), colour).save(root / "images" / f"{i}.png")
    return model, root / "images"


def test_second_index_into_one_out_stops_in_one_line_and_a_killed_holder_blocks_nothing(tmp_path, gallery):
    model, images = gallery
    out = tmp_path / "index"
    holder = hold(out, "gadms index", "../.index.lock")  # an index's lock is .INDEX.lock next to it
    try:
        second = gadms("index", "--out", str(out), "--images", str(images), "--model", str(model), cwd=tmp_path)
        assert second.returncode == 2, second
        assert second.stderr.strip() == (
            f"error: {out} is being written by another gadms index (pid {holder.pid}, since "
            f"{second.stderr.split('since ')[1].split(')')[0]}); wait for it or choose another --out"
        )
        assert not (out / "index.json").exists()
    finally:
        kill(holder)
    third = gadms("index", "--out", str(out), "--images", str(images), "--model", str(model), "--quiet", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert f"index {out}: 2 images" in third.stdout


@pytest.mark.parametrize(
    "args, command, lock_name",
    [
        (["train", "pretrain", "--data", "nowhere", "--out", "{out}", "--no-track"], "gadms train pretrain", ".lock"),
        (
            ["train", "finetune", "--benchmark", "cuhk-pedes", "--out", "{out}", "--no-track"],
            "gadms train finetune",
            ".lock",
        ),
        (["pipeline", "--params", "{params}", "--set", "paths.work_dir={out}"], "gadms pipeline", ".pipeline.lock"),
    ],
)
def test_a_second_training_or_pipeline_on_a_held_folder_stops_in_one_line(
    tmp_path, run_gadms, args, command, lock_name
):
    out = tmp_path / "out"
    (tmp_path / "none.yaml").write_text("{}\n")
    holder = hold(out, command, lock_name)
    try:
        outcome = run_gadms(*[a.format(out=out, params=tmp_path / "none.yaml") for a in args])
    finally:
        kill(holder)
    outcome.assert_contract()
    assert outcome.code == 2
    assert f"{out} is being written by another {command} (pid {holder.pid}, since " in outcome.stderr
    assert sorted(p.name for p in out.iterdir()) == [lock_name]  # the second run wrote nothing


def test_the_ranks_a_run_launched_share_its_out_and_only_rank_0_of_a_hand_started_torchrun_locks(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with writer_lock(out, "gadms train pretrain"):
        monkeypatch.setenv(OUT_LOCK_ENV, str(out.resolve()))  # a rank started by the holder
        with out_lock(out, "gadms train pretrain"):
            pass
        monkeypatch.delenv(OUT_LOCK_ENV)
        monkeypatch.setenv("RANK", "1")  # not rank 0 of a torchrun started by hand
        with out_lock(out, "gadms train pretrain"):
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(OutputBusy, match="being written by another gadms train pretrain"):
            with out_lock(out, "gadms train pretrain"):
                pass


def test_waiting_for_a_lock_gets_it_once_the_holder_is_killed(tmp_path):
    holder = hold(tmp_path / "out", "gadms pipeline")
    with pytest.raises(OutputBusy):
        with writer_lock(tmp_path / "out", "test", wait=0.3):
            pass
    kill(holder)
    with writer_lock(tmp_path / "out", "test", wait=5.0) as lock_file:
        assert f'"pid": {os.getpid()}' in lock_file.read_text()
    assert lock_file.read_text() == ""  # released: no holder shown


def test_the_pipeline_lock_is_reentrant_in_one_process_and_busy_for_another(tmp_path):
    """What the flow and ``gadms pipeline`` share, without Prefect: the CLI takes the lock, the flow in the same
    process takes it again (yields None, holds on); another process's holding yields why, holding nothing."""
    from gadms.locks import PIPELINE_LOCK, pipeline_lock, pipeline_lock_or_busy

    work = tmp_path / "work"
    with pipeline_lock(work, "gadms pipeline"):
        with pipeline_lock_or_busy(work, "pipeline flow run 'x'") as busy:
            assert busy is None
        with pytest.raises(OutputBusy):  # still held after the inner block: another writer_lock is refused
            with writer_lock(work, "other", lock_file=work / PIPELINE_LOCK):
                pass
    holder = hold(work, "gadms pipeline", PIPELINE_LOCK)
    try:
        with pipeline_lock_or_busy(work, "pipeline flow run 'y'") as busy:
            assert isinstance(busy, OutputBusy)
            assert str(busy).startswith(f"{work} is being written by another gadms pipeline (pid {holder.pid}")
    finally:
        kill(holder)
    with pipeline_lock_or_busy(work, "pipeline flow run 'z'") as busy:
        assert busy is None
