"""Image bytes to RGB pixels: deterministic, bounded, and every failure with its reason."""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gadms.config import SourceConfig
from gadms.curation.records import CORRUPT_IMAGE, EMPTY_FILE, TOO_LARGE, TRUNCATED_IMAGE
from gadms.safe_files import DECODE_FORMATS, UnsafeFile, WatchedBytes, check_pixels, image_header

_DEFAULTS = SourceConfig()


class ImageDecodeError(ValueError):
    """Image bytes that cannot be turned into pixels.

    Attributes:
        reason: one of ``empty_file``, ``corrupt_image``, ``truncated_image``, ``too_large``.
        detail: what exactly is wrong, for a person reading the report.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Keeps the exception picklable across Dask / Ray workers despite the two-argument constructor.
        return (type(self), (self.reason, self.detail))


def open_image(stream: BinaryIO) -> Image.Image:
    """``Image.open`` for the decode formats, without Pillow's decompression-bomb warning (our pixel cap applies).

    Pillow still raises ``DecompressionBombError`` past twice its own limit.
    """
    return image_header(stream)  # the one opener every command shares (gadms.safe_files)


def decode_image(data: bytes, max_pixels: int = _DEFAULTS.max_image_pixels) -> np.ndarray:
    """Decode image bytes to RGB pixels, refusing anything empty, broken, cut off or too large.

    Decoding is deterministic. Palette, grey, 16-bit, CMYK and images with
    transparency (composited over white) all become RGB; the EXIF orientation
    is applied. A cut-off JPEG is refused even if some other code switched on
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``; no global state is changed.

    Args:
        data: encoded image bytes (JPEG, PNG, WebP, GIF, BMP or TIFF).
        max_pixels: largest width * height accepted, checked before pixels are allocated.

    Returns:
        A ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
        ImageDecodeError: with reason ``empty_file``, ``corrupt_image``, ``truncated_image`` or ``too_large``.
    """
    if not data:
        raise ImageDecodeError(EMPTY_FILE, "image data is empty")
    stream = WatchedBytes(data)
    try:
        with open_image(stream) as image:
            _check_pixels(image.size, max_pixels)
            image.load()
            if image.format in ("JPEG", "MPO") and stream.read_past_end:
                raise ImageDecodeError(TRUNCATED_IMAGE, "JPEG data ends before the image does")
            return np.array(_to_rgb(_upright(image)), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(TOO_LARGE, str(err)) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(CORRUPT_IMAGE, f"not a {', '.join(DECODE_FORMATS)} image") from None
    except (
        Exception
    ) as err:  # Pillow's plugins raise assorted types (OSError, SyntaxError, struct.error, ...) on bad data
        reason = TRUNCATED_IMAGE if "truncated" in str(err).lower() else CORRUPT_IMAGE
        raise ImageDecodeError(reason, f"{type(err).__name__}: {err}") from None


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image whose header announces more than ``max_pixels`` pixels."""
    try:
        check_pixels(size, max_pixels, "image")
    except UnsafeFile as err:
        raise ImageDecodeError(TOO_LARGE, err.detail.removeprefix("image: ")) from None


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; unchanged without one or with unreadable EXIF."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF must not cost a usable picture
        return image
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of an image of any mode: alpha over white, 16-bit grey scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        grey = np.round(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # convert() would copy an RGBA image
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)  # in place: one full-size copy fewer than Image.alpha_composite
        del rgba
        return white.convert("RGB")
    return image.convert("RGB")
