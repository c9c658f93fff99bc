"""Input pipeline: image transforms, caption tokenisation, datasets and samplers.

Every random choice of a sample (augmentation) is seeded by
``(seed, epoch, index)``, and every epoch's order by ``(seed, epoch)``, so a
run resumed from a checkpoint sees exactly the batches an uninterrupted run
would, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from gadms.config import AugmentConfig
from gadms.problems import ImageError
from gadms.safe_files import UnsafeFile, decode_image, read_file

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageSource = Union[Path, bytes]
SEED_SPACE = 1 << 64  # torch generators take seeds below 2**64; derived seeds wrap around (smaller ones unchanged)


def image_transform(height: int, width: int, augment: AugmentConfig | None = None) -> v2.Compose:
    """Resize to ``height x width`` and normalise; with ``augment``, the switchable training augmentations.

    Augmentations: horizontal flip, padding then random crop (10 px), colour
    jitter (brightness, contrast, saturation 0.1), random erasing (after
    normalisation, p = 0.5, 2% to ``augment.erasing_max_area`` of the image,
    filled with 0, i.e. the mean colour, or with ``augment.erasing_fill: mean``
    with CLIP's mean values themselves, as the released code does).
    """
    steps: list = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if augment is not None:
        if augment.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.pad_crop:
            steps += [v2.Pad(10), v2.RandomCrop((height, width))]
        if augment.color_jitter:
            steps.append(v2.ColorJitter(0.1, 0.1, 0.1, 0))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)]
    if augment is not None and augment.random_erasing:
        fill = list(CLIP_MEAN) if augment.erasing_fill == "mean" else 0
        steps.append(v2.RandomErasing(p=0.5, scale=(0.02, augment.erasing_max_area), value=fill))
    return v2.Compose(steps)


def open_image(source: ImageSource, label: str | None = None) -> Image.Image:
    """Decode an image from a path or encoded bytes as RGB.

    Args:
        source: a file path or the encoded bytes.
        label: names in-memory bytes in an error (e.g. ``"pair 12"``); a path names itself.

    Returns:
        The RGB image.

    Raises:
        ImageError: the image cannot be read or decoded; one line naming the file.
    """
    name = str(source) if not isinstance(source, bytes) else f"{label or 'image'} ({len(source)} bytes)"
    try:  # one way in: regular files only, byte and pixel caps, bomb checks (see gadms.safe_files)
        data = source if isinstance(source, bytes) else read_file(source)
        return decode_image(data, name)
    except UnsafeFile as exc:
        raise ImageError(f"{name}: cannot decode image ({exc.detail.removeprefix(name + ': ')})") from None


@dataclass(frozen=True)
class Pair:
    """One training pair: an image, one of its captions, its identity and (for TIC) another caption of the image."""

    image: ImageSource
    caption: str
    identity: int
    partner: str | None = None


class PairDataset(Dataset):
    """Caption-image pairs as ``(image tensor, token ids, identity, index)``.

    Args:
        pairs: the pairs (one per caption).
        transform: image transform (see :func:`image_transform`).
        tokenizer: CLIP tokenizer (truncates to its context length).
        seed: seeds each sample's augmentation together with the epoch and index.
        partners: also yield the token ids of the pair's partner caption (TIC); a pair
            without one yields its own caption again.
    """

    def __init__(self, pairs: Sequence[Pair], transform, tokenizer, seed: int = 0, partners: bool = False):
        self.pairs = list(pairs)
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.partners = partners
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % SEED_SPACE)
            image = self.transform(open_image(pair.image, f"image of training pair {index}"))
        tokens = self.tokenizer([pair.caption])[0]
        if self.partners:
            return image, tokens, pair.identity, index, self.tokenizer([pair.partner or pair.caption])[0]
        return image, tokens, pair.identity, index


def with_partners(pairs: Sequence[Pair], image_keys: Sequence[int]) -> list[Pair]:
    """Give each pair the next caption of the same image (cyclically) as its TIC partner.

    Args:
        pairs: the pairs.
        image_keys: per pair, which image it shows (pairs with equal keys share an image).

    Returns:
        The pairs with ``partner`` set; a caption alone on its image gets none.
    """
    by_image: dict[int, list[int]] = {}
    for position, key in enumerate(image_keys):
        by_image.setdefault(key, []).append(position)
    out = list(pairs)
    for members in by_image.values():
        if len(members) < 2:
            continue
        for j, position in enumerate(members):
            partner = pairs[members[(j + 1) % len(members)]].caption
            out[position] = Pair(pairs[position].image, pairs[position].caption, pairs[position].identity, partner)
    return out


class ImageDataset(Dataset):
    """Gallery images as ``(image tensor, index)`` for evaluation."""

    def __init__(self, images: Sequence[ImageSource], transform):
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(open_image(self.images[index], f"gallery image {index}")), index


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, split evenly across ``world_size`` ranks.

    Each rank gets ``ceil(n / world_size)`` indices (the permutation is padded
    by wrapping around), so every rank runs the same number of steps.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed * 7919 + self.epoch) % SEED_SPACE)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = len(self) * self.world_size
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return iter(order[self.rank : total : self.world_size])


class IdentitySampler(Sampler[int]):
    """Identity-aware batches: each batch holds ``batch // instances`` identities x ``instances`` pairs.

    Identities with fewer pairs than ``instances`` are sampled with
    replacement. Seeded per epoch; split across ranks like :class:`EpochSampler`.
    """

    def __init__(
        self,
        identities: Sequence[int],
        batch: int,
        instances: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch % instances:
            raise ValueError(f"batch size {batch} must be a multiple of instances per identity {instances}")
        self.by_id: dict[int, list[int]] = {}
        for index, identity in enumerate(identities):
            self.by_id.setdefault(identity, []).append(index)
        self.batch, self.instances, self.seed, self.rank, self.world_size = batch, instances, seed, rank, world_size
        self.size = len(identities)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed((self.seed * 7919 + self.epoch) % SEED_SPACE)
        ids = list(self.by_id)
        order: list[int] = []
        while len(order) < self.size:
            for k in torch.randperm(len(ids), generator=g).tolist():
                members = self.by_id[ids[k]]
                if len(members) >= self.instances:
                    picks = torch.randperm(len(members), generator=g)[: self.instances].tolist()
                else:
                    picks = torch.randint(len(members), (self.instances,), generator=g).tolist()
                order += [members[p] for p in picks]
        return order[: math.ceil(self.size / (self.batch * self.world_size)) * self.batch * self.world_size]

    def __len__(self) -> int:
        return math.ceil(self.size / (self.batch * self.world_size)) * self.batch

    def __iter__(self) -> Iterator[int]:
        order = self._indices()
        # consecutive blocks of `batch` go to ranks in turn so identities stay grouped
        blocks = [order[i : i + self.batch] for i in range(0, len(order), self.batch)]
        return iter([i for b, block in enumerate(blocks) if b % self.world_size == self.rank for i in block])
