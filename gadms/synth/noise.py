"""What the GASS noise studies share: the attribute words of the synthetic world, a caption with known-wrong
words, and the synthetic benchmark's images as the model's normalised tensors.

Used by ``python -m gadms.bench.gass_noise`` (a model trained from scratch) and ``gadms.ablate.auroc`` (a trained
model), which score each caption's words and ask how well the scores find the wrong ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gadms.synth.attributes import VOCABULARY
from gadms.synth.captions import GENDER_WORDS

_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
ATTRIBUTE_WORDS = (
    {w for values in VOCABULARY.values() for w in values} | set(GENDER_WORDS["man"]) | set(GENDER_WORDS["woman"])
)


@dataclass
class NoisyCaption:
    """A caption, its image index and the character spans of its wrong words."""

    image: int
    caption: str
    wrong_starts: list[int]


def load_image(path: Path, height: int, width: int) -> torch.Tensor:
    """One benchmark image resized (bicubic) to ``height x width`` and normalised with CLIP's mean and std.

    Args:
        path: the image file.
        height: rows of the tensor.
        width: columns of the tensor.

    Returns:
        A float tensor of shape ``(3, height, width)``.
    """
    image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    return (torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255 - _MEAN) / _STD
