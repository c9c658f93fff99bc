"""Generated hostile input folders for the commands that read them: the contract holds, every input is left as
it was, nothing is written into an input folder, and no child process outlives the command.

Each example builds a folder of generated entries (random bytes, empty files, a real JPEG, JSON text, nested
folders, links to a file outside it and dangling links) under names shaped like images, shards and index files,
or made of unicode, newlines, spaces and leading dashes; then runs one of ``validate``, ``data stats``,
``data index``, ``index`` and ``search`` over it, in-process. The folder (and the file its links point to) is
hashed without following links before and after: bytes, link targets and mtimes must match, and the only new
entry allowed is ``_shards.parquet``, which ``data index`` writes by design.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from gadms.config import ModelConfig
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from tests.data._stream_corpus import write_corpus

CHEAP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SHARDS_INDEX = "_shards.parquet"  # what ``gadms data index PATH`` writes into PATH
COMMANDS = ["validate", "stats curated", "stats cuhk", "data index", "index", "search", "search queries"]


def _jpeg() -> bytes:
    """A real 32x64 JPEG of noise."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


REAL_NAMES = st.sampled_from(
    ["00000.tar", "00001.tar", "meta/00000.parquet", "part-0.parquet", SHARDS_INDEX, "index.json", "sources.jsonl"]
    + ["embeddings.f32", "reid_raw.json", "CUHK-PEDES/reid_raw.json", "CUHK-PEDES/imgs/p/a.jpg", "a.jpg", "b.png"]
)
# Names as a file system takes them: no "/" or NUL, at most 80 bytes, never "." or "..".
MADE_UP = st.text(st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]), min_size=1, max_size=20)
STEMS = st.one_of(MADE_UP, st.sampled_from(["-", "--help", "-rf", " ", "\n", "a\nb", "\r", "\t", "...", "é", "😀"]))
SUFFIXES = st.sampled_from([".jpg", ".png", ".tar", ".parquet", ".json", ".jsonl", ".f32", ""])
NAMES = st.one_of(
    REAL_NAMES,
    st.builds(lambda stem, suffix: stem + suffix, STEMS, SUFFIXES).filter(lambda n: n not in (".", "..")),
    st.builds(lambda a, b: f"{a}/{b}", STEMS, REAL_NAMES).filter(lambda n: not n.startswith(("./", "../"))),
)
CONTENTS = st.one_of(
    st.binary(max_size=300),
    st.just(b""),
    st.just(_jpeg()),
    st.sampled_from([b'{"version": 1}', b"[]", b"null", b'{"model": {"label": "\\u0000"}}', b"PAR1" * 10]),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "replace")),
)
ENTRIES = st.lists(
    st.tuples(NAMES, st.sampled_from(["file"] * 4 + ["dir", "link_out", "link_dangling"]), CONTENTS), max_size=6
)


def _write_entry(root: Path, outside: Path, name: str, kind: str, content: bytes) -> None:
    """Create one generated entry under ``root``; an entry that clashes with an earlier one is left out."""
    path = root / name
    if path.is_symlink() or path.exists():  # never write through a link made earlier
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            path.write_bytes(content)
        elif kind == "dir":
            path.mkdir()
            (path / "inner.jpg").write_bytes(content)
        elif kind == "link_out":
            path.symlink_to(outside)
        else:
            path.symlink_to(root / "gone" / "nowhere.jpg")
    except (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError):
        pass
    except OSError as exc:  # a name the file system refuses (too long in bytes)
        if exc.errno != errno.ENAMETOOLONG:
            raise


def _tree(root: Path) -> dict[str, tuple[str, str, int]]:
    """Relative path -> (kind, sha256 of bytes or link target, mtime ns) of every entry; links are not followed."""
    seen = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            if path.is_symlink():
                kind, data = "link", os.readlink(path).encode("utf-8", "surrogateescape")
            elif path.is_dir():
                kind, data = "dir", b""
            else:
                kind, data = "file", path.read_bytes()
            mtime = 0 if kind == "dir" else info.st_mtime_ns  # a folder's mtime moves with an allowed new file
            seen[str(path.relative_to(root))] = (kind, hashlib.sha256(data).hexdigest(), mtime)
    return seen


def _stamp(path: Path) -> tuple[str, int]:
    """(sha256, mtime ns) of one regular file."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _children() -> dict[int, list[str]]:
    """Process id -> command line of this test process's living descendants, but for the one watchdog that
    :func:`gadms.lifetime.guard` starts per process (it lives as long as the process it watches, by design)."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            found[child.pid] = child.cmdline()
        except psutil.NoSuchProcess:
            continue
    return {pid: line for pid, line in found.items() if not ("watchdog_main" in " ".join(line) and _is_mine(line))}


def _is_mine(line: list[str]) -> bool:
    """Whether a watchdog's command line names this process as the one it watches."""
    return line[-1:] == [str(os.getpid())]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny retrieval model as safetensors, for ``gadms index``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32))).eval()
    return save_model(model, tmp_path_factory.mktemp("model") / "model.safetensors")


def _command(name: str, folder: Path, out: Path, model_file: Path, extra: str) -> list[str]:
    """The command line of command ``name`` reading ``folder`` and writing only under ``out``."""
    lines = {
        "validate": ["validate", "--data", str(folder), "--report", str(out / "gate")],
        "stats curated": ["data", "stats", "curated", "--root", str(folder)],
        "stats cuhk": ["data", "stats", "cuhk-pedes", "--root", str(folder), "--json"],
        "data index": ["data", "index", str(folder)],
        "index": ["index", "--out", str(out / "index"), "--images", str(folder), "--model", str(model_file)],
        "search": ["search", str(folder), extra, "--device", "cpu", "-k", "3"],
        "search queries": ["search", str(folder), "--queries", str(folder / extra), "--device", "cpu"],
    }
    return lines[name] + (["--device", "cpu", "--quiet"] if name == "index" else [])


@pytest.mark.timeout(600)
@CHEAP
@given(
    entries=ENTRIES,
    command=st.sampled_from(COMMANDS),
    extra=st.one_of(REAL_NAMES, STEMS),
    corpus=st.booleans(),
)
@example(entries=[], command="data index", extra="a", corpus=True)  # succeeds: writes _shards.parquet
@example(entries=[("a.jpg", "link_out", b""), ("-b.jpg", "file", _jpeg())], command="index", extra="", corpus=False)
@example(entries=[("00002.tar", "link_out", b""), ("x\n.tar", "file", b"")], command="validate", extra="", corpus=True)
def test_a_hostile_input_folder_is_read_never_changed(
    entries, command, extra, corpus, model_file, run_gadms, tmp_path_factory
):
    """``corpus``: the folder starts as a real curated corpus of two shards (so that commands also succeed)."""
    root = tmp_path_factory.mktemp("inputs")
    folder, out, outside = root / "in", root / "out", root / "outside.jpg"
    if corpus:
        write_corpus(folder, [2, 1])
    else:
        folder.mkdir()
    out.mkdir()
    outside.write_bytes(_jpeg())
    for name, kind, content in entries:
        _write_entry(folder, outside, name, kind, content)
    before, outside_before, children = _tree(folder), _stamp(outside), _children()
    args = _command(command, folder, out, model_file, extra)
    outcome = run_gadms(*args)
    outcome.assert_contract()
    assert outcome.code != 70, f"an unexpected failure on {args!r}: {outcome.stderr}"
    after = _tree(folder)
    if command == "data index":  # written (or rewritten) by design
        before.pop(SHARDS_INDEX, None)
        after.pop(SHARDS_INDEX, None)
    assert after == before, f"{args!r} changed its input folder"
    assert _stamp(outside) == outside_before, "a link out of the folder was followed and written through"
    left = {pid: line for pid, line in _children().items() if pid not in children}
    assert not left, f"{args!r} left child processes behind: {left}"
