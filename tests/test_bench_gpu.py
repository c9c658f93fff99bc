"""The GPU check (python -m gadms.bench.gpu): its no-GPU line, its CPU dry run, its table and failure lines."""

import math
import subprocess
import sys

import pytest
import torch

from gadms.bench import gpu
from gadms.bench.gpu_common import Row

PARTS = {"a", "b", "c", "d"}


def table_rows(stdout: str) -> list[list[str]]:
    """The ``part | measure | value | unit | note`` cells of each table row after the title and header."""
    lines = stdout.splitlines()
    start = lines.index(gpu.TABLE_TITLE) + 2  # title, then the header
    rows = []
    for line in lines[start:]:
        if not line.startswith("("):
            break
        cells = [cell.strip() for cell in line.split("|", 4)]
        rows.append(cells + [""] * (5 - len(cells)))
    return rows


def test_without_a_gpu_it_prints_one_line_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [gpu.NO_GPU]
    assert out.out.startswith("no CUDA GPU is present")
    assert out.err == ""


def test_help_documents_the_dry_run(capsys):
    with pytest.raises(SystemExit) as stop:
        gpu.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--dry-run-cpu" in text and "gloo" in text and "Exit status" in text


def test_a_missing_parameter_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert gpu.main(["--dry-run-cpu", "--params", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "parameter file not found" in err


def test_a_failing_part_is_one_line_and_the_others_still_run():
    def broken() -> list[Row]:
        raise RuntimeError("NCCL error: unhandled system error\nmore detail")

    parts = [
        ("a", "first", lambda: [Row("a", "x", 1.5)]),
        ("b", "second", broken),
        ("c", "third", lambda: [Row("c", "y", 2.0, "samples/s", "note")]),
    ]
    progress: list[str] = []
    rows, failures = gpu.run_parts(parts, echo=progress.append)
    assert [r.part for r in rows] == ["a", "c"]
    assert failures == ["part (b) second FAILED: RuntimeError: NCCL error: unhandled system error"]
    assert [line.split(":")[1].split()[0] for line in progress] == ["done", "failed", "done"]
    cells = table_rows("\n".join(gpu.format_table(rows)))
    assert [(c[0], c[2], c[3]) for c in cells] == [("(a)", "1.5", ""), ("(c)", "2", "samples/s")]


@pytest.mark.slow
def test_the_cpu_dry_run_measures_every_part():
    cmd = [sys.executable, "-m", "gadms.bench.gpu", "--dry-run-cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "FAILED" not in result.stdout and "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert {cells[0].strip("()") for cells in rows} == PARTS
    values = {cells[1]: float(cells[2]) for cells in rows}
    assert all(math.isfinite(v) for v in values.values()), values
    assert values["max abs param diff vs rank 0, 2 DDP steps"] == 0.0  # two gloo ranks agree bit for bit
    assert 0 < values["grad rel. diff AMP vs fp32, all params"] < 1  # bfloat16 differs from fp32, but not wildly
    assert values["GA-DMS step throughput"] > 0 and values["IRRA-style step throughput"] > 0
    assert [m for m in values if m.startswith("peak memory")] == [
        "peak memory, GA-DMS step, batch 4",
        "peak memory, GA-DMS step, batch 8",
    ]
    notes = {cells[1]: cells[4] for cells in rows}
    assert "same masks" in notes["grad rel. diff AMP vs fp32, worst param"]
    assert "GLOO, world size 2" in notes["max abs param diff vs rank 0, 2 DDP steps"]
