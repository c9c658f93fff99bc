"""The base stage: the tiny model pre-trained on clean synthetic captions, a stand-in for public CLIP weights.

GA-DMS starts from a CLIP that already grounds words in images; the tiny backbone has no such weights. The
base stage trains it contrastively (SDM + ITC, no masking, no MTP) on a clean synthetic corpus of its own
identities and keeps only the CLIP part (``clip.safetensors``), which every ablation row then loads through
``model.pretrained``, as it would load OpenAI's weights. The result is cached in
``ablate.base.cache_dir/base-<digest>``, the digest of every input that shapes it (the base corpus's settings
and the training parameters): the same inputs reuse it, a changed one builds a new base.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gadms.ablate.rows import derive, digest, result_shaping
from gadms.ablate.testbed import build_corpus
from gadms.config import Params
from gadms.reproducible_writes import atomic_path, write_bytes_atomic
from gadms.synth.checkable import WORLD_VERSION

CLIP_WEIGHTS = "clip.safetensors"
INFO = "base.json"
GROUNDED_CHECKPOINT = "grounded-checkpoint.pt"  # the hard-negative base's state after its last finished epoch


@dataclass(frozen=True)
class BaseModel:
    """A built base: the CLIP weights file, the digest of its inputs, whether this call trained it."""

    weights: Path
    key: str
    built: bool
    seconds: float = 0.0


# Sections the base stage does not use (no masking, no MTP, no fine-tuning): reset to their defaults, so that
# changing them (e.g. GASS layers for the rows) neither changes nor rebuilds the base.
UNUSED = ("model.gass", "model.masking", "model.interaction", "loss.mtp", "finetune")


def base_params(params: Params) -> Params:
    """The base stage's training parameters: ``params`` without masking or MTP, with ``ablate.base``'s epochs/lr."""
    b = params.ablate.base
    sets = [f"{key}={{}}" for key in UNUSED]
    sets += [
        "model.masking.score=none",
        "loss.mtp.enabled=false",
        "model.pretrained=null",
        f"train.epochs={b.epochs}",
        f"train.optimizer.lr={b.lr}",
        f"seed={b.corpus.seed}",
    ]
    return derive(params, sets, "ablate.base")


def base_key(params: Params) -> str:
    """The digest of every input of the base stage (its corpus settings and training parameters)."""
    shaped = result_shaping(base_params(params))
    b = params.ablate.base
    corpus = b.corpus.model_dump(mode="json")
    if b.corpus.gallery == "random":  # keys of bases built before the field existed stay valid
        corpus.pop("gallery")
    if b.corpus.vocabulary == "full":  # keys of bases built before the field existed stay valid
        corpus.pop("vocabulary")
    else:
        corpus["vocabulary"] = f"{b.corpus.vocabulary}-v{WORLD_VERSION}"
    inputs: dict[str, object] = {"corpus": corpus, "params": shaped}
    if b.hard_negatives:
        inputs["hard_negatives"] = True
    return digest(inputs)


def base_dir(params: Params) -> Path:
    """Where the base of these parameters lives."""
    return Path(params.ablate.base.cache_dir) / f"base-{base_key(params)[:16]}"


def ensure_base(
    params: Params, device: str = "cpu", progress: bool = False, log: Callable[[str], None] = lambda _: None
) -> BaseModel:
    """The base CLIP weights of ``params``: reused when built before, else trained now (resuming a killed build).

    Args:
        params: ``ablate.base`` and the training settings.
        device: where to train.
        progress: show the training progress bar.
        log: where the hard-negative base's per-epoch lines go.

    Returns:
        The base model's weights file and key.
    """
    from safetensors.torch import save_file

    from gadms.train.recipes import run_pretrain

    key, folder = base_key(params), base_dir(params)
    weights = folder / CLIP_WEIGHTS
    if weights.is_file() and (folder / INFO).is_file():
        return BaseModel(weights, key, built=False)
    started = time.perf_counter()
    train = base_params(params)
    corpus = build_corpus("corpus", params.ablate.base.corpus, params.synth, folder)
    if params.ablate.base.hard_negatives:
        from gadms.ablate.grounding import train_grounded

        model, epochs = train_grounded(train, corpus.root, log, folder / GROUNDED_CHECKPOINT, key)
    else:
        run = folder / "run"
        model, history = run_pretrain(
            train,
            corpus.root,
            "cuhk-pedes",
            run,
            resume=(run / "checkpoint.pt").is_file(),
            device=device,
            progress=progress,
        )
        epochs = [{"epoch": h.epoch + 1, **h.losses} for h in history]
    state = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"gadms.ablate.base_key": key})
    seconds = time.perf_counter() - started
    info = {"key": key, "seconds": seconds, "epochs": epochs}
    write_bytes_atomic(folder / INFO, json.dumps(info, indent=1).encode("utf-8"))
    (folder / GROUNDED_CHECKPOINT).unlink(missing_ok=True)  # built: nothing left to resume
    return BaseModel(weights, key, built=True, seconds=seconds)
