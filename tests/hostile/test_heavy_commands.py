"""Generated hostile command lines for the commands that train, curate, draw or evaluate.

Each example is one of ``train pretrain|finetune``, ``evaluate``, ``curate run|templates``, ``synth
web|benchmark``, ``ablate`` and ``pipeline``, given hostile places for its inputs (a missing path, an empty
folder, a junk file, a FIFO, ``/dev/null``, shards that are not shards, a folder where a file belongs) and up to
three hostile ``--set`` overrides. None of these places holds usable data, so every example ends in moments:
with its output (the synth commands draw a world of 1 to 3 scenes or 3 identities) or with one line.

Asserted for each: the hostile-suite contract (a documented exit status, no traceback, at most one line on
stderr), no unexpected failure (exit 70), the inputs unchanged byte for byte, no child process left, and no
finished-looking output from a failed run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.test_no_traceback import ARGV_TEXT, NUMBERS, SETS

HEAVY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BENCHMARKS = ["cuhk-pedes", "icfg-pedes", "rstpreid"]
FINISHED = ("model.safetensors", "results.md", "manifest.parquet")  # what a finished run leaves


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Places that hold nothing a command can use: each is an input of some generated command."""
    root = tmp_path_factory.mktemp("heavy")
    (root / "empty").mkdir()
    (root / "junk.bin").write_bytes(bytes(range(256)) * 8)
    os.mkfifo(root / "fifo")
    shards = root / "shards"
    shards.mkdir()
    (shards / "00000.tar").write_bytes(b"not a tar" * 100)
    (shards / "part-0.parquet").write_bytes(b"PAR1 not parquet PAR1")
    os.mkfifo(shards / "00001.tar")
    (root / "run" / "model.safetensors").mkdir(parents=True)  # a folder where a model file belongs
    bench = root / "bench" / "CUHK-PEDES"
    bench.mkdir(parents=True)
    (bench / "reid_raw.json").write_text('[{"id": 1, "captions": ["<script>x</script>"], "split": "test"}]')
    (root / "captions.txt").write_text("\x00\x01 not a caption \udcff\n" * 3, errors="surrogateescape")
    (root / "params.yaml").write_text("train: {batch_size: -1}\nseed: nan\n")
    names = ["missing", "empty", "junk.bin", "fifo", "shards", "run", "bench", "captions.txt", "params.yaml"]
    return {name: root / name for name in names} | {"root": root, "dev_null": Path("/dev/null")}


def _fingerprint(root: Path) -> dict[str, str]:
    """What the input places hold: a hash per regular file, the kind of everything else."""
    seen = {}
    for path in sorted(root.rglob("*")):
        if path.name == "out" or "out" in path.relative_to(root).parts:
            continue
        seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path.stat().st_mode)
    return seen


def _commands(places: dict[str, Path], out: str) -> st.SearchStrategy[list[str]]:
    """One hostile command line of a heavy command, writing under ``out``."""
    path = st.sampled_from([str(p) for k, p in places.items() if k != "root"] + ["", "-"])
    bench = st.one_of(st.sampled_from(BENCHMARKS + ["webperson", "curated"]), ARGV_TEXT)
    formats = st.one_of(st.sampled_from(["curated", "webperson", *BENCHMARKS]), ARGV_TEXT)
    cpu = ["--device", "cpu"]
    return st.one_of(
        st.builds(
            lambda d, f: ["train", "pretrain", "--data", d, "--format", f, "--out", f"{out}/pre", "--no-track"] + cpu,
            path,
            formats,
        ),
        st.builds(
            lambda b, r, i: (
                ["train", "finetune", "--benchmark", b, "--root", r, "--init", i, "--out", f"{out}/ft", "--no-track"]
                + cpu
            ),
            bench,
            path,
            path,
        ),
        st.builds(
            lambda c, b, r: ["evaluate", "--checkpoint", c, "--benchmark", b, "--root", r] + cpu, path, bench, path
        ),
        st.builds(lambda i: ["curate", "run", "--input", i, "--out", f"{out}/data", "--quiet"], path),
        st.builds(lambda c: ["curate", "templates", "--captions", c, "--out", f"{out}/t.json", "--quiet"], path),
        st.builds(
            lambda n, s: ["synth", "web", "--out", f"{out}/web", "--scenes", n, "--seed", s, "--quiet"],
            st.sampled_from(["1", "3", "0", "-1", "x"]),
            NUMBERS,
        ),
        st.builds(
            lambda n: ["synth", "benchmark", "--out", f"{out}/b", "--identities", n, "--quiet"],
            st.sampled_from(["3", "2", "-5", "1e9", "nan"]),
        ),
        st.builds(
            lambda c, r: ["ablate", "--corpus", c, "--rows", r, "--out", f"{out}/ab", "--no-track"] + cpu,
            path,
            st.one_of(st.sampled_from(["gass", "none,random", ""]), ARGV_TEXT),
        ),
        st.builds(lambda p: ["pipeline", "--params", p], path.filter(bool)),
    )


def _children() -> set[int]:
    """This process's descendants, leaving out the watchdog that guard() starts once per process."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "watchdog_main" not in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
@HEAVY
@given(data=st.data())
def test_no_heavy_command_prints_a_traceback_changes_its_inputs_or_leaves_a_process(
    data, inputs, run_gadms, monkeypatch, tmp_path_factory
):
    monkeypatch.chdir(inputs["empty"])  # "" and "-" name the working folder: keep what they write out of the repo
    out = tmp_path_factory.mktemp("out")
    before, children = _fingerprint(inputs["root"]), _children()
    args = data.draw(_commands(inputs, str(out))) + data.draw(st.one_of(st.just([]), SETS))
    outcome = run_gadms(*args)
    outcome.assert_contract()
    assert outcome.code != 70, f"an unexpected failure on {args!r}: {outcome.stderr}"
    assert _fingerprint(inputs["root"]) == before, f"{args!r} changed its inputs"
    assert _children() <= children, f"{args!r} left a child process"
    if outcome.code != 0:
        finished = [p for name in FINISHED for p in out.rglob(name) if p.is_file()]
        assert not finished, f"{args!r} failed yet left {finished}"
