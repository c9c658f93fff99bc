"""A base that grounds every word: contrastive pre-training with hard-negative captions (issue 22).

For the ``checkable`` corpus (:mod:`gadms.synth.checkable`). Each training caption comes with one copy per slot
(top, bottom, shoe, bag colour) whose colour is swapped for another of the six (a bagless person's copy gains a
bag); the copies join the batch as negatives of the caption's image only, so the loss can fall only as far as
the model tells every slot's colour apart. The loss: image-to-text cross-entropy over the batch's captions and
all the copies (positives: the captions of the image's identity, weighted equally), plus text-to-image
cross-entropy over the batch's images, at the SDM / ITC temperature ``loss.temperature``. One caption in
:data:`MASK_SHARE` has one colour word replaced by the mask token, so the model learns that a masked word
says nothing (occlusion and the rows' masking use that token). Only the CLIP part is kept.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from gadms.config import Params
from gadms.model.backbone import MASK_TOKEN_ID, tokenizer
from gadms.model.files import ModelFileError, read_torch_file
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.reproducible_writes import atomic_path
from gadms.synth.attributes import Identity
from gadms.synth.checkable import CHECKABLE_COLORS, SLOTS, swap_one
from gadms.synth.noise import load_image

MASK_SHARE = 0.15
WEIGHT_DECAY = 0.02


@dataclass(frozen=True)
class CheckableSet:
    """One split of a checkable corpus in memory: images, and per caption its image, identity and template."""

    images: torch.Tensor  # (n_images, 3, H, W), normalised
    image_of: list[int]  # per caption
    captions: list[str]
    slots: list[list[tuple[int, int, str]]]  # per caption: (start, end, slot) of its colour words
    identities: list[Identity]  # per caption: the person's truth
    person: list[int]  # per caption: identity id
    templates: list[int]
    wrong: list[set[int]]  # per caption: the start characters of its wrong words (empty when clean)


def read_checkable(root: Path, split: str, height: int, width: int) -> CheckableSet:
    """The ``split`` of the checkable benchmark under ``root`` (holding ``CUHK-PEDES/``); one-line error otherwise."""
    bench = Path(root) / "CUHK-PEDES"
    records = json.loads((bench / "reid_raw.json").read_text(encoding="utf-8"))
    truth = json.loads((bench / "synthetic_truth.json").read_text(encoding="utf-8"))["records"]
    if not truth or "slots" not in truth[0]:
        raise ValueError(f"{bench}: not a checkable corpus (ablate.*.vocabulary: checkable)")
    images, image_of, captions, slots, identities, person, templates, wrong = [], [], [], [], [], [], [], []
    for record, t in zip(records, truth):
        if record["split"] != split:
            continue
        images.append(load_image(bench / "imgs" / record["file_path"], height, width))
        identity = Identity.from_dict(t["attributes"])
        for c, caption in enumerate(record["captions"]):
            image_of.append(len(images) - 1)
            captions.append(caption)
            slots.append([(int(s), int(e), str(a)) for s, e, a in t["slots"][c]])
            identities.append(identity)
            person.append(int(record["id"]))
            templates.append(int(t["templates"][c]))
            wrong.append({int(span["start"]) for span in t["noise_spans"][c]})
    return CheckableSet(torch.stack(images), image_of, captions, slots, identities, person, templates, wrong)


def hard_negatives(data: CheckableSet, k: int, rng: np.random.Generator) -> list[str]:
    """Caption ``k`` with each slot's colour swapped in turn (one copy per slot, in :data:`SLOTS` order)."""
    identity, template = data.identities[k], data.templates[k]
    out = []
    for slot in SLOTS:
        truth = str(getattr(identity, slot))
        color = str(rng.choice([c for c in CHECKABLE_COLORS if c != truth]))
        out.append(swap_one(identity, template, slot, color)[0])
    return out


def grounding_loss(
    image: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor, person: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Image-to-text over captions + hard negatives, text-to-image over images; same-identity pairs positive.

    Args:
        image: ``(B, E)`` image features.
        text: ``(B, E)`` their captions' features.
        negatives: ``(B, K, E)`` hard-negative captions of each pair (negatives of their own image only).
        person: ``(B,)`` identity ids.
        temperature: tau.

    Returns:
        The mean of the two cross-entropies.
    """
    image, text, negatives = F.normalize(image, dim=-1), F.normalize(text, dim=-1), F.normalize(negatives, dim=-1)
    same = (person[:, None] == person[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    own = torch.einsum("be,bke->bk", image, negatives)
    i2t = torch.cat([image @ text.T, own], dim=1) / temperature
    i2t_target = torch.cat([target, torch.zeros_like(own)], dim=1)
    t2i = text @ image.T / temperature
    loss_i2t = -(i2t_target * F.log_softmax(i2t, dim=1)).sum(dim=1).mean()
    loss_t2i = -(target * F.log_softmax(t2i, dim=1)).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


def mask_one_word(tokens: torch.Tensor, positions: list[list[int]], rng: np.random.Generator) -> torch.Tensor:
    """``tokens`` with, in :data:`MASK_SHARE` of the rows, one of the row's colour-word positions masked."""
    out = tokens.clone()
    for row, where in enumerate(positions):
        if where and rng.random() < MASK_SHARE:
            out[row, where[int(rng.integers(len(where)))]] = MASK_TOKEN_ID
    return out


def word_positions(tok, caption: str, spans: list[tuple[int, int, str]]) -> list[int]:
    """Token index (after the start token) of each span's word; spans must start at word boundaries."""
    return [1 + len(tok.encode(caption[:start])) for start, _, _ in spans]


def save_progress(path: Path, state: dict) -> None:
    """Write the grounded base's checkpoint atomically (after every epoch)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def progress_state(
    key: str, model: torch.nn.Module, optimizer: Any, scheduler: Any, rng: np.random.Generator, history: list
) -> dict:
    """Everything the next epoch depends on: weights, optimizer and schedule, both random streams, the history."""
    return {
        "key": key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(history),
    }


def restore_progress(
    state: dict, model: torch.nn.Module, optimizer: Any, scheduler: Any, rng: np.random.Generator
) -> list[dict[str, float]]:
    """Load a :func:`progress_state` back; returns the epochs done."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    return list(json.loads(state["history"]))


def load_progress(path: Path | None, key: str, log: Callable[[str], None]) -> dict | None:
    """The grounded base's checkpoint at ``path`` when it is of this build (``key``), else None.

    A checkpoint of other settings or one that cannot be read is not resumed from (one line says why: the build
    starts over); the folder of a base is its key, so that happens only to a file damaged or put there by hand.
    """
    if path is None or not path.is_file():
        return None
    try:
        state = read_torch_file(path)
    except ModelFileError as error:
        log(f"{error}; the base starts over")
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        log(f"{path}: a checkpoint of other settings; the base starts over")
        return None
    return state


def train_grounded(
    params: Params,
    corpus: Path,
    log: Callable[[str], None] = lambda _: None,
    checkpoint: Path | None = None,
    key: str = "",
) -> tuple[PersonRetrievalModel, list[dict[str, float]]]:
    """Pre-train the tiny model on the checkable corpus's train split with hard-negative captions.

    Args:
        params: ``model`` (architecture), ``train.batch_size``, ``loss.temperature``, ``ablate.base`` (epochs, lr,
            and its corpus's seed, which seeds everything here).
        corpus: the checkable base corpus (holding ``CUHK-PEDES/``).
        log: where one line per epoch goes.
        checkpoint: where to keep the state after every epoch; a build killed midway resumes from it and ends
            with the same weights, byte for byte, as one that ran straight through.
        key: what the checkpoint must carry to be resumed from (the base's key).

    Returns:
        The model and per-epoch ``{"epoch", "loss", "seconds"}``.
    """
    b, m = params.ablate.base, params.model
    seed = b.corpus.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0x6A0D])
    data = read_checkable(corpus, "train", m.image_height, m.image_width)
    model = PersonRetrievalModel(Architecture.from_config(m))
    tok = tokenizer(m.context_length)
    clip = model.clip
    optimizer = torch.optim.AdamW(clip.parameters(), lr=b.lr, weight_decay=WEIGHT_DECAY)
    batch = min(params.train.batch_size, len(data.captions))
    steps_per_epoch = len(data.captions) // batch
    total = steps_per_epoch * b.epochs
    warmup = steps_per_epoch

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    positions = [word_positions(tok, c, s) for c, s in zip(data.captions, data.slots)]
    person = torch.tensor(data.person)
    history: list[dict[str, float]] = []
    resumed = load_progress(checkpoint, key, log)
    if resumed is not None:
        history = restore_progress(resumed, model, optimizer, scheduler, rng)
        log(f"grounded base: resuming after epoch {len(history)}/{b.epochs} ({checkpoint})")
    model.train()
    for epoch in range(len(history), b.epochs):
        started, losses = time.perf_counter(), []
        order = rng.permutation(len(data.captions))
        for step in range(steps_per_epoch):
            idx = order[step * batch : (step + 1) * batch].tolist()
            images = data.images[[data.image_of[k] for k in idx]]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            tokens = mask_one_word(tok([data.captions[k] for k in idx]), [positions[k] for k in idx], rng)
            negatives = tok([n for k in idx for n in hard_negatives(data, k, rng)])
            image_features = model.encode_image(images)[0]
            text_features = model.encode_text(torch.cat([tokens, negatives]))
            text, negs = text_features[: len(idx)], text_features[len(idx) :].view(len(idx), len(SLOTS), -1)
            loss = grounding_loss(image_features, text, negs, person[idx], params.loss.temperature)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clip.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": seconds})
        if checkpoint is not None:
            save_progress(checkpoint, progress_state(key, model, optimizer, scheduler, rng, history))
        log(f"grounded base epoch {epoch + 1}/{b.epochs}: loss {np.mean(losses):.4f} ({seconds:.0f}s)")
    model.eval()
    return model, history
