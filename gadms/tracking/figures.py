"""Retrieval-example figures: a text query above its top-ranked gallery images.

Drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot
state), so figures can be made from any thread and need no closing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gadms.safe_files import decode_image, open_image_file

GalleryImage = Union[str, Path, bytes, np.ndarray]
CORRECT_COLOUR = "#1a9641"  # green: same identity as the query
WRONG_COLOUR = "#d7191c"  # red: another identity
FRAME_WIDTH = 5


def as_array(image: GalleryImage) -> np.ndarray:
    """An image as an ``(H, W, 3)`` uint8 (or float) array.

    Args:
        image: a file path, encoded bytes, or an array (returned as is).

    Returns:
        The pixels.
    """
    if isinstance(image, np.ndarray):
        return image
    # One way in for every file (gadms.safe_files): regular files only, byte and pixel caps, bomb checks.
    opened = decode_image(image, "image") if isinstance(image, bytes) else open_image_file(Path(image))
    with opened:
        return np.asarray(opened)


def _frame(axes, colour: str) -> None:
    """Draw a thick coloured frame around an image axes."""
    for spine in axes.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(FRAME_WIDTH)


def retrieval_examples_figure(
    query_text: str, ranked_images: Sequence[GalleryImage], correct: Sequence[bool], title: str = ""
) -> Figure:
    """One query and its ranked gallery images, correct ones framed green, wrong ones red.

    Args:
        query_text: the caption used as the query (wrapped above the images).
        ranked_images: the top-ranked gallery images, best first (paths, bytes or arrays).
        correct: for each image, whether it shows the query's identity.
        title: first line of the heading, e.g. ``direct transfer, cuhk-pedes``.

    Returns:
        The figure (one row of images, rank under each).

    Raises:
        ValueError: when ``ranked_images`` and ``correct`` differ in length or are empty.
    """
    if len(ranked_images) != len(correct) or not ranked_images:
        raise ValueError(
            f"need one correct flag per ranked image, got {len(ranked_images)} images and {len(correct)} flags"
        )
    k = len(ranked_images)
    lines = ([title] if title else []) + textwrap.wrap(f'"{query_text}"', 11 * max(k, 4))
    heading_in = 0.2 + 0.17 * len(lines)  # inches of text above the images
    figure = Figure(figsize=(1.25 * max(k, 4), 3.0 + heading_in))
    FigureCanvasAgg(figure)
    figure.suptitle("\n".join(lines), fontsize=9, parse_math=False)  # a caption is text, never $math$
    for rank, (image, hit) in enumerate(zip(ranked_images, correct), start=1):
        axes = figure.add_subplot(1, k, rank)
        axes.imshow(as_array(image))
        axes.set_xticks([])
        axes.set_yticks([])
        _frame(axes, CORRECT_COLOUR if hit else WRONG_COLOUR)
        axes.set_xlabel(f"#{rank}", fontsize=8)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.08, top=1 - heading_in / (3.0 + heading_in), wspace=0.12)
    return figure
