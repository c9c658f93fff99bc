"""One way in for every file: every image and data file any command reads is opened here.

The promise, for curation, the benchmark readers, the streaming loader, ``gadms index``, ``gadms serve`` and
the MLflow model alike:

- only regular files are read: a FIFO, device or socket is refused from ``os.stat`` before it is opened, and
  the open itself is non-blocking, so one swapped in after the check cannot hang the reader;
- given the folder a file came from (``root``), a path whose real location (symbolic links followed) is
  outside that folder is refused;
- a file over the byte cap is refused before it is read, an image over the pixel cap before its pixels are
  decoded (bytes already in memory go through the same checks), and only the formats a web crawl holds are
  decoded;
- a read that goes on past its time bound (a slow remote file) is an error.

Every refusal is an :class:`UnsafeFile`: a one-line message naming the file, and a short ``reason`` that
readers count skipped records by. The caps are the running command's ``curation.source`` values
(:mod:`gadms.file_rules`).
"""

from __future__ import annotations

import io
import os
import stat
import time
import warnings
from typing import IO, Any, BinaryIO, Optional, Union, cast

from PIL import Image, UnidentifiedImageError

from gadms.file_rules import file_kind, max_file_bytes, max_image_pixels
from gadms.problems import DataError
from gadms.storage import Location, is_url, open_binary

READ_TIMEOUT_S = 60.0  # a single file read (remote ones included) that takes longer is an error
READ_CHUNK = 1 << 20
# Formats a web crawl legitimately holds; others (EPS, PSD, ...) widen the attack surface for nothing.
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

MISSING = "missing_file"
NOT_REGULAR = "not_a_regular_file"
OUTSIDE_ROOT = "outside_root"
TOO_LARGE = "too_large"
EMPTY = "empty_file"
CORRUPT = "corrupt_image"
TRUNCATED = "truncated_image"
TIMED_OUT = "read_timeout"
CHANGED = "changed"
NOT_TEXT = "not_utf8_text"

PathLike = Union[str, os.PathLike, Location]


class UnsafeFile(DataError):
    """A file or image that was refused; ``reason`` is one of this module's reason constants."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Picklable across DataLoader workers despite the two-argument constructor.
        return (type(self), (self.reason, self.detail))


def open_regular(path: PathLike, root: PathLike | None = None) -> BinaryIO:
    """A regular file opened for reading bytes, like ``open(path, "rb")`` (a URL is streamed by :mod:`gadms.storage`).

    Args:
        path: the file.
        root: the folder it came from; a file whose real location is outside it is refused.

    Returns:
        The open file; the caller closes it.

    Raises:
        OSError: as ``open`` (missing file, no permission).
        UnsafeFile: not a regular file, or outside ``root``.
    """
    if is_url(path):
        return cast(BinaryIO, open_binary(path))  # type: ignore[arg-type]
    real = _real_path(path, root)
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped in between the check and the open
        os.close(fd)
        raise UnsafeFile(NOT_REGULAR, f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file(
    path: PathLike,
    root: PathLike | None = None,
    max_bytes: int | None = None,
    timeout_s: float = READ_TIMEOUT_S,
    stamp: tuple[int, int] | None = None,
) -> bytes:
    """All bytes of a regular file, within the byte cap and the time bound.

    Args:
        path: the file (a local path or a URL).
        root: the folder it came from (see :func:`open_regular`).
        max_bytes: a larger file is refused before it is read (default :func:`max_file_bytes`).
        timeout_s: a read that takes longer is refused.
        stamp: the ``(size, mtime_ns)`` the file must still have (checked on the opened file).

    Returns:
        The bytes.

    Raises:
        UnsafeFile: see :func:`open_regular`; also ``missing_file`` (any ``OSError``), ``too_large``,
            ``read_timeout`` and ``changed``.
    """
    max_bytes = max_file_bytes() if max_bytes is None else max_bytes
    try:
        with open_regular(path, root) as handle:
            if not is_url(path):
                _check_opened(path, os.fstat(handle.fileno()), max_bytes, stamp)
            return _read_bounded(path, handle, max_bytes, timeout_s)
    except OSError as err:
        raise UnsafeFile(MISSING, f"{path}: cannot read ({err.strerror or err})") from None


def read_text(path: PathLike, what: str = "text file", max_bytes: int | None = None) -> str:
    """A UTF-8 text file (captions, queries, templates) read through :func:`read_file`: a FIFO or device never
    blocks it, a file past the byte cap is refused unread.

    Args:
        path: the file.
        what: what the file is, for the error (``captions file``).
        max_bytes: as for :func:`read_file`.

    Raises:
        UnsafeFile: see :func:`read_file`; also ``not_utf8_text``.
    """
    data = read_file(path, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeFile(NOT_TEXT, f"{path}: not UTF-8 text (expected a {what})") from None


def open_image_file(
    path: PathLike,
    root: PathLike | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """An image file read through :func:`read_file` and decoded to RGB through :func:`decode_image`."""
    return decode_image(read_file(path, root, max_bytes), str(path), max_pixels)


def decode_image(data: bytes, label: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Encoded image bytes as an RGB image, refusing empty, unknown, over-cap, broken or cut-off data.

    The pixel cap is checked on the header, before any pixel is decoded.

    Args:
        data: the encoded bytes (JPEG, PNG, WebP, GIF, BMP or TIFF).
        label: names the image in an error.
        max_pixels: largest width * height accepted (default :func:`max_image_pixels`).

    Returns:
        The decoded image, mode RGB.

    Raises:
        UnsafeFile: ``empty_file``, ``too_large``, ``corrupt_image`` or ``truncated_image``.
    """
    if not data:
        raise UnsafeFile(EMPTY, f"{label}: image data is empty")
    stream = WatchedBytes(data)
    try:
        with image_header(stream) as image:
            check_pixels(image.size, max_image_pixels() if max_pixels is None else max_pixels, label)
            image.load()
            if image.format in ("JPEG", "MPO") and stream.read_past_end:
                raise UnsafeFile(TRUNCATED, f"{label}: JPEG data ends before the image does")
            return image.convert("RGB")
    except UnsafeFile:
        raise
    except Image.DecompressionBombError as err:
        raise UnsafeFile(TOO_LARGE, f"{label}: {err}") from None
    except Exception as err:  # Pillow's plugins raise assorted types (OSError, SyntaxError, zlib.error, ...)
        raise UnsafeFile(_decode_reason(err), f"{label}: {_describe(err)}") from None


def image_header(stream: IO[bytes]) -> Image.Image:
    """``Image.open`` limited to :data:`DECODE_FORMATS`, without Pillow's bomb warning (our pixel cap applies).

    Pillow still raises ``DecompressionBombError`` past twice its own limit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(stream, formats=DECODE_FORMATS)


def check_pixels(size: tuple[int, int], max_pixels: int, label: str = "image") -> None:
    """Refuse an image whose header announces more than ``max_pixels`` pixels (reason ``too_large``)."""
    width, height = size
    if width * height > max_pixels:
        detail = f"{width}x{height} is {width * height} pixels, more than the limit of {max_pixels}"
        raise UnsafeFile(TOO_LARGE, f"{label}: {detail}")


def _real_path(path: PathLike, root: PathLike | None) -> str:
    """The file's real path after the checks from ``os.stat``: it exists, is regular, and lies under ``root``."""
    path = str(path)
    info = os.stat(path)  # follows links: what would be read; OSError as open() would raise it
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(NOT_REGULAR, f"{path}: not a regular file ({file_kind(info.st_mode)})")
    real = os.path.realpath(path)
    if root is not None and not _is_within(real, os.path.realpath(str(root))):
        raise UnsafeFile(OUTSIDE_ROOT, f"{path}: resolves to {real}, outside {root}")
    return real


def _is_within(real: str, root: str) -> bool:
    """Whether the real path ``real`` is ``root`` itself or below it."""
    return real == root or real.startswith(os.path.join(root, ""))


def check_stamp(path: PathLike, info: os.stat_result, stamp: tuple[int, int] | None) -> None:
    """Refuse a file whose ``(size, mtime_ns)`` (from ``info``, e.g. ``os.fstat`` of it) is no longer ``stamp``."""
    if stamp is not None and (info.st_size, info.st_mtime_ns) != tuple(stamp):
        raise UnsafeFile(CHANGED, f"{path}: changed since it was recorded")


def _check_opened(path: PathLike, info: os.stat_result, max_bytes: int, stamp: tuple[int, int] | None) -> None:
    """Refuse an opened file over the byte cap, or whose ``(size, mtime_ns)`` is no longer ``stamp``."""
    check_stamp(path, info, stamp)
    if info.st_size > max_bytes:
        raise UnsafeFile(TOO_LARGE, f"{path}: holds {info.st_size} bytes, more than the limit of {max_bytes}")


def _read_bounded(path: PathLike, handle: IO[bytes], max_bytes: int, timeout_s: float) -> bytes:
    """Read to the end in chunks, refusing more than ``max_bytes`` bytes or a read past ``timeout_s``."""
    deadline, chunks, total = time.monotonic() + timeout_s, [], 0
    while chunk := handle.read(min(READ_CHUNK, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise UnsafeFile(TOO_LARGE, f"{path}: holds more than the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise UnsafeFile(TIMED_OUT, f"{path}: reading took longer than {timeout_s:g} s")
    return b"".join(chunks)


def _decode_reason(err: Exception) -> str:
    """``truncated_image`` when Pillow says the data is cut off, else ``corrupt_image``."""
    return TRUNCATED if "truncated" in str(err).lower() else CORRUPT


def _describe(err: Exception) -> str:
    """``Type: first line of the message`` (just the type when the message is empty)."""
    if isinstance(err, UnidentifiedImageError):
        return f"UnidentifiedImageError: not a {', '.join(DECODE_FORMATS)} image"
    text = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class WatchedBytes(io.BytesIO):
    """In-memory image data that remembers whether a reader asked for bytes past its end."""

    read_past_end = False

    def read(self, size: Optional[int] = -1) -> bytes:
        """Read like ``BytesIO.read``, noting an empty answer to a non-empty request."""
        chunk = super().read(size)
        if not chunk and size != 0:
            self.read_past_end = True
        return chunk
