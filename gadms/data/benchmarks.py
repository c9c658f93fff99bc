"""Readers for the retrieval benchmarks CUHK-PEDES, ICFG-PEDES and RSTPReid (SPEC section 7).

Each benchmark is one JSON list of records (identity, image path, captions,
split) next to an ``imgs/`` folder. A split is read into a ``SplitData``:
images with identities (the gallery) and captions with identities (the
queries), identities renumbered 0..K-1 within the split. Bad records are
skipped and reported, or raise ``DataError`` in strict mode: malformed
fields, an image path that leaves the dataset root (absolute, with ``..``, or
through a symbolic link that points outside ``imgs/``), and (with
``check_images``) an image that is missing, empty or does not decode.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

from gadms.problems import DataError, Problem, describe_problems
from gadms.safe_files import CORRUPT, EMPTY, MISSING, TRUNCATED, UnsafeFile, open_image_file, read_file

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"\d+", re.ASCII)
MAX_ANNOTATION_BYTES = 1 << 30  # the annotation JSON is read whole; the published ones are tens of MB
_IMAGE_REASONS = {CORRUPT: "corrupt image", TRUNCATED: "corrupt image"}  # the reasons reports counted before


@dataclass(frozen=True)
class BenchmarkFormat:
    """Where a benchmark keeps its annotations and how its records are spelled."""

    name: str
    directory: str
    annotation: str
    image_key: str
    splits: tuple[str, ...]


FORMATS: dict[str, BenchmarkFormat] = {
    "cuhk-pedes": BenchmarkFormat("cuhk-pedes", "CUHK-PEDES", "reid_raw.json", "file_path", ("train", "val", "test")),
    "icfg-pedes": BenchmarkFormat("icfg-pedes", "ICFG-PEDES", "ICFG-PEDES.json", "file_path", ("train", "test")),
    "rstpreid": BenchmarkFormat("rstpreid", "RSTPReid", "data_captions.json", "img_path", ("train", "val", "test")),
}
BENCHMARKS = tuple(FORMATS)


@dataclass(frozen=True)
class SplitData:
    """One split of a benchmark: images with identities, captions pointing at their image.

    Attributes:
        name: benchmark name, e.g. ``"cuhk-pedes"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        annotation_file: the JSON file the split was read from.
        images: image paths, in file order.
        image_ids: identity of each image, 0..K-1 (original ids in ascending order).
        captions: all captions of the kept images, image by image.
        caption_image: for each caption, the index of its image in ``images``.
        caption_ids: for each caption, the identity of its image.
        original_ids: ``original_ids[k]`` is the id in the file of identity ``k``.
        problems: records skipped (this split's, plus those whose split is unreadable).
    """

    name: str
    split: str
    annotation_file: Path
    images: list[Path]
    image_ids: list[int]
    captions: list[str]
    caption_image: list[int]
    caption_ids: list[int]
    original_ids: list[int]
    problems: list[Problem]

    @property
    def num_identities(self) -> int:
        """Number of distinct identities in the split."""
        return len(self.original_ids)

    def gallery(self) -> tuple[list[Path], list[int]]:
        """The retrieval gallery.

        Returns:
            ``(images, image_ids)``.
        """
        return self.images, self.image_ids

    def queries(self) -> tuple[list[str], list[int]]:
        """The text queries.

        Returns:
            ``(captions, caption_ids)``.
        """
        return self.captions, self.caption_ids

    def report(self) -> str:
        """One paragraph on the skipped records: count by reason and the first examples.

        Returns:
            The summary, naming the benchmark, split and annotation file.
        """
        return describe_problems(f"{self.name} {self.split} ({self.annotation_file})", self.problems)


@dataclass(frozen=True)
class BenchmarkData:
    """The requested splits of one benchmark, read in one pass over its annotation file.

    Attributes:
        name: benchmark name.
        annotation_file: the JSON file read.
        splits: split name -> its data.
        problems: every skipped record, each once.
    """

    name: str
    annotation_file: Path
    splits: dict[str, SplitData]
    problems: list[Problem]

    def report(self) -> str:
        """One paragraph on all skipped records.

        Returns:
            The summary, naming the benchmark and annotation file.
        """
        return describe_problems(f"{self.name} ({self.annotation_file})", self.problems)


@dataclass(frozen=True)
class _Entry:
    split: str
    image: Path
    original_id: int
    captions: list[str]


def benchmark_format(name: str) -> BenchmarkFormat:
    """The layout of a benchmark by name (case-insensitive).

    Args:
        name: one of ``BENCHMARKS``.

    Returns:
        Its ``BenchmarkFormat``.
    """
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise DataError(f"unknown benchmark {name!r} (choose from {', '.join(BENCHMARKS)})") from None


def benchmark_dir(name: str, root: Path | str) -> Path:
    """The benchmark's own directory, given its parent or the directory itself.

    Args:
        name: one of ``BENCHMARKS``.
        root: e.g. ``/data`` or ``/data/CUHK-PEDES``.

    Returns:
        The directory holding the annotation file and ``imgs/`` (not checked to exist).
    """
    fmt = benchmark_format(name)
    root = Path(root)
    if (root / fmt.annotation).is_file():
        return root
    if (root / fmt.directory / fmt.annotation).is_file() or root.name != fmt.directory:
        return root / fmt.directory
    return root


def read_benchmark(
    name: str,
    root: Path | str,
    splits: Sequence[str] | None = None,
    strict: bool = False,
    check_images: bool = True,
) -> BenchmarkData:
    """Read some or all splits of a benchmark, skipping and reporting bad records.

    Args:
        name: one of ``BENCHMARKS``.
        root: the benchmark directory or its parent.
        splits: splits to read; ``None`` reads all the benchmark has.
        strict: raise ``DataError`` on the first bad record instead of skipping it.
        check_images: treat a record whose image file is missing, empty or undecodable as bad
            (each image is decoded once, at reduced scale for JPEG).

    Returns:
        The splits and the problems found; a warning is logged when records were skipped.
    """
    fmt = benchmark_format(name)
    wanted = tuple(fmt.splits if splits is None else splits)
    for split in wanted:
        if split not in fmt.splits:
            raise DataError(f"{fmt.name} has no split {split!r} (splits: {', '.join(fmt.splits)})")
    directory = benchmark_dir(name, root)
    annotation_file = directory / fmt.annotation
    records = _read_record_list(annotation_file)

    entries: list[_Entry] = []
    problems: dict[str | None, list[Problem]] = {None: []}
    images = _ImagesDir(directory / "imgs")
    for index, record in enumerate(records):
        outcome = _check_record(index, record, fmt, wanted, images, check_images)
        if isinstance(outcome, tuple):
            record_split, problem = outcome
            if strict:
                raise DataError(f"{annotation_file} record {index}: {problem.detail}")
            problems.setdefault(record_split, []).append(problem)
        elif outcome is not None:
            entries.append(outcome)

    unassigned = problems[None]
    data = {
        split: _split_data(
            fmt.name,
            split,
            annotation_file,
            [e for e in entries if e.split == split],
            problems.get(split, []) + unassigned,
        )
        for split in wanted
    }
    every_problem = sorted((p for ps in problems.values() for p in ps), key=lambda p: p.index)
    result = BenchmarkData(fmt.name, annotation_file, data, every_problem)
    if every_problem:
        logger.warning(result.report())
    return result


def load_benchmark(
    name: str, root: Path | str, split: str, strict: bool = False, check_images: bool = True
) -> SplitData:
    """Read one split of a benchmark.

    Args:
        name: one of ``BENCHMARKS``.
        root: the benchmark directory or its parent (``/data`` and ``/data/CUHK-PEDES`` both work).
        split: ``"train"``, ``"val"`` (not ICFG-PEDES) or ``"test"``.
        strict: raise ``DataError`` on the first bad record instead of skipping it.
        check_images: treat a record whose image file is missing, empty or undecodable as bad.

    Returns:
        The split's images, captions and identities, with the skipped records in ``problems``.
    """
    return read_benchmark(name, root, (split,), strict=strict, check_images=check_images).splits[split]


def _read_record_list(path: Path) -> list[Any]:
    """The annotation file's top-level JSON list; a missing or malformed file is a one-line ``DataError``."""
    try:
        raw = read_file(path, max_bytes=MAX_ANNOTATION_BYTES)
    except UnsafeFile as err:
        if err.reason == MISSING and not path.exists():
            raise DataError(f"annotation file not found: {path}") from None
        raise DataError(f"cannot read annotation file: {err.detail}") from None
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got a JSON {type(records).__name__}")
    return records


class _ImagesDir:
    """A benchmark's ``imgs/`` folder, as given (``path``) and with every symbolic link resolved (``real``)."""

    def __init__(self, path: Path):
        self.path = path
        self.real = path.resolve()  # imgs/ itself may be a link (to another disk); what is inside must stay in it

    def escapes(self, image: Path) -> bool:
        """Whether ``image`` (inside :attr:`path` by name) really lies outside it: a symbolic link points out."""
        try:
            return not image.resolve().is_relative_to(self.real)
        except (OSError, RuntimeError):  # a link loop: no usable image either way
            return True


def _check_record(
    index: int, record: Any, fmt: BenchmarkFormat, wanted: tuple[str, ...], images: _ImagesDir, check_images: bool
) -> _Entry | tuple[str | None, Problem] | None:
    """A valid record as an entry, a bad one as ``(its split or None, problem)``, one of another split as None."""
    if not isinstance(record, dict):
        return None, Problem(index, "not an object", f"record is a JSON {type(record).__name__}, not an object")
    split = record.get("split")
    if split is None:
        return None, Problem(index, "missing key", "missing key 'split'")
    if not isinstance(split, str) or split not in fmt.splits:
        return None, Problem(index, "unknown split", f"unknown split {split!r} (expected {', '.join(fmt.splits)})")
    if split not in wanted:
        return None
    problem = _record_problem(index, record, fmt.image_key)
    if problem is not None:
        return split, problem
    image = images.path / record[fmt.image_key]
    if images.escapes(image):
        detail = f"{fmt.image_key!r} leaves the dataset root through a symbolic link: {record[fmt.image_key]!r:.80}"
        return split, Problem(index, "bad image path", detail)
    if check_images:
        problem = _image_problem(index, image, images.path)
        if problem is not None:
            return split, problem
    return _Entry(split, image, _parse_id(record["id"]), list(record["captions"]))  # type: ignore[arg-type]


def _record_problem(index: int, record: dict, image_key: str) -> Problem | None:
    """What is wrong with a record's id, image path or captions, if anything."""
    for key in ("id", image_key, "captions"):
        if key not in record:
            return Problem(index, "missing key", f"missing key {key!r}")
    if _parse_id(record["id"]) is None:
        return Problem(index, "bad id", f"'id' must be an integer or a string of digits, got {record['id']!r}")
    path = record[image_key]
    if not isinstance(path, str) or not path.strip() or "\0" in path:
        return Problem(index, "bad image path", f"{image_key!r} must be a relative path string, got {path!r:.80}")
    if _leaves_root(path):
        return Problem(index, "bad image path", f"{image_key!r} leaves the dataset root: {path!r:.80}")
    captions = record["captions"]
    if not isinstance(captions, list) or not captions:
        return Problem(index, "bad captions", f"'captions' must be a non-empty list of strings, got {captions!r}")
    for k, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            return Problem(index, "bad captions", f"caption {k} must be a non-empty string, got {caption!r}")
    return None


def _leaves_root(path: str) -> bool:
    """Whether a record's image path is absolute (POSIX or Windows) or climbs with ``..``."""
    posix, windows = PurePosixPath(path), PureWindowsPath(path)
    return posix.is_absolute() or bool(windows.drive or windows.root) or ".." in posix.parts or ".." in windows.parts


def _image_problem(index: int, image: Path, root: Path) -> Problem | None:
    """Why an image file cannot be used (missing, empty, not a regular file, over a cap, not decodable), or None."""
    try:  # one way in for every file: gadms.safe_files
        open_image_file(image, root).close()
    except UnsafeFile as err:
        if err.reason == MISSING:
            return Problem(index, "missing image", f"image file not found: {image}")
        if err.reason == EMPTY:
            return Problem(index, "empty image", f"image file is empty (0 bytes): {image}")
        reason = _IMAGE_REASONS.get(err.reason, err.reason.replace("_", " "))
        return Problem(index, reason, f"image refused ({err.reason}): {err.detail}")
    return None


def _parse_id(value: Any) -> int | None:
    """An identity as int: ints (not bools) and strings of ASCII digits; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def _split_data(
    name: str, split: str, annotation_file: Path, entries: list[_Entry], problems: list[Problem]
) -> SplitData:
    """Number identities 0..K-1 in ascending original id and lay captions out image by image."""
    original_ids = sorted({e.original_id for e in entries})
    label = {original: k for k, original in enumerate(original_ids)}
    image_ids = [label[e.original_id] for e in entries]
    caption_image = [i for i, e in enumerate(entries) for _ in e.captions]
    return SplitData(
        name=name,
        split=split,
        annotation_file=annotation_file,
        images=[e.image for e in entries],
        image_ids=image_ids,
        captions=[c for e in entries for c in e.captions],
        caption_image=caption_image,
        caption_ids=[image_ids[i] for i in caption_image],
        original_ids=original_ids,
        problems=sorted(problems, key=lambda p: p.index),
    )
