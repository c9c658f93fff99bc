"""What every reader of :mod:`gadms.safe_files` allows, in a module light enough for any command's start-up.

The byte and pixel caps are those of the running command's parameters (``curation.source``): the command sets
them once its parameters are loaded (:func:`use_limits`), in the environment, so the processes it starts (loader
workers, torchrun ranks) read the same ones. Without it they are ``curation.source``'s defaults.
"""

from __future__ import annotations

import os
import stat
from typing import Protocol

MAX_FILE_BYTES = 32 * 2**20  # curation.source.max_member_bytes's default, unless use_limits() set another
MAX_IMAGE_PIXELS = 16_000_000  # curation.source.max_image_pixels's default, unless use_limits() set another
FILE_BYTES_VARIABLE = "GADMS_MAX_FILE_BYTES"
IMAGE_PIXELS_VARIABLE = "GADMS_MAX_IMAGE_PIXELS"


class Caps(Protocol):
    """What :func:`use_limits` reads: params' ``curation.source`` (:class:`gadms.config.SourceConfig`)."""

    @property
    def max_member_bytes(self) -> int: ...

    @property
    def max_image_pixels(self) -> int: ...


def use_limits(source: Caps) -> None:
    """Make ``source``'s byte and pixel caps (params' ``curation.source``) those of every reader of this process
    and of the processes it starts; each command calls it once its parameters are loaded."""
    os.environ[FILE_BYTES_VARIABLE] = str(source.max_member_bytes)
    os.environ[IMAGE_PIXELS_VARIABLE] = str(source.max_image_pixels)


def max_file_bytes() -> int:
    """The byte cap of this run: ``curation.source.max_member_bytes`` as :func:`use_limits` set it, else 32 MiB."""
    return _limit(FILE_BYTES_VARIABLE, MAX_FILE_BYTES)


def max_image_pixels() -> int:
    """The pixel cap of this run: ``curation.source.max_image_pixels`` as :func:`use_limits` set it, else 16 M."""
    return _limit(IMAGE_PIXELS_VARIABLE, MAX_IMAGE_PIXELS)


def _limit(variable: str, default: int) -> int:
    """A positive whole number from the environment, else ``default``."""
    text = os.environ.get(variable, "")
    return int(text) if text.isdigit() and int(text) > 0 else default


def file_kind(mode: int) -> str:
    """What a non-regular file is, in a word."""
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")]
    kinds += [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((word for test, word in kinds if test(mode)), "not a file")
