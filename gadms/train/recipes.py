"""Pre-training and fine-tuning runs built from params.yaml.

Pre-training (GA-DMS) reads a caption corpus: the project's curated shards,
WebPerson Parquet shards, or a benchmark's train split; there are no
identities, so the captions of one image form one identity. Fine-tuning
(IRRA-style: SDM + 15% masked language modelling, optional identity loss)
reads a benchmark's train split with its identities, starting from a
pre-trained model. Each pair carries another caption of its image, the
partner the TIC loss contrasts it with when ``loss.tic`` is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from gadms.config import LossConfig, Params, flatten
from gadms.data.benchmarks import BENCHMARKS, load_benchmark
from gadms.data.pipeline import Pair, PairDataset, image_transform, with_partners
from gadms.data.shardplan import curated_index, webperson_index
from gadms.data.streaming import StreamingPairs
from gadms.model.backbone import tokenizer
from gadms.model.files import read_torch_file, require_entries
from gadms.model.retrieval import Architecture, PersonRetrievalModel, build_with_weights, load_model
from gadms.storage import local_path, location
from gadms.train.loop import CHECKPOINT, FINAL_MODEL, Trainer
from gadms.train.param_groups import GroupRule
from gadms.train.settings import EpochLog, RunSettings

CORPUS_FORMATS = ("curated", "webperson", *BENCHMARKS)
# what --resume may change: how long a run trains (the schedule stretches to the new length: "train longer"),
# where and how fast it runs; every other key of these sections shapes the result and must stay as recorded
RESUMABLE = (
    "train.epochs",
    "finetune.epochs",
    "train.num_workers",
    "train.gpus",
    "train.checkpoint_every_steps",
    "train.stream.prefetch",
    "model.pretrained",  # a resumed run takes its weights from the checkpoint
)
_UNUSED_BY_FINETUNE = (
    "train.batch_size",
    "train.optimizer.lr",
    "train.warmup_epochs",
    "train.identity",
    "train.stream.",
)


def resume_settings(params: Params, mode: str) -> dict[str, Any]:
    """The result-shaping settings a checkpoint records, by params key; ``--resume`` refuses a change of any.

    Args:
        params: the run's parameters.
        mode: ``pretrain`` or ``finetune`` (fine-tuning also reads ``finetune.*``, not train's batch or lr).

    Returns:
        ``{"train.batch_size": 32, "train.optimizer.lr": 0.0005, ...}``: seed, model, loss, augmentation and
        training settings, less :data:`RESUMABLE`.
    """
    sections = ("seed", "model", "loss", "augment", "train") + (("finetune",) if mode == "finetune" else ())
    unused = _UNUSED_BY_FINETUNE if mode == "finetune" else ()
    return {
        key: value
        for key, value in flatten(params).items()
        if key.split(".")[0] in sections and key not in RESUMABLE and not key.startswith(unused)
    }


def require_batch_fits(pairs: int, batch: int, key: str, data: str) -> None:
    """Refuse a batch larger than the data: no full batch would form, so nothing would train.

    Raises:
        ValueError: one line naming the key, the batch size and the number of pairs.
    """
    if batch > pairs:
        raise ValueError(
            f"{key} {batch} is larger than the data: {data} holds {pairs} caption-image pairs; "
            f"set {key} to at most {pairs}"
        )


def corpus_pairs(fmt: str, root: Path) -> list[Pair]:
    """Pre-training pairs of a corpus held in memory; the identity of a pair is its image's index.

    Training streams curated and WebPerson corpora instead (:func:`pretrain_dataset`).
    """
    if fmt in BENCHMARKS:
        split = load_benchmark(fmt, root, "train")
        return [
            Pair(split.images[image], caption, image) for caption, image in zip(split.captions, split.caption_image)
        ]
    iterate: Callable[..., Iterator[Any]]
    if fmt == "curated":
        from gadms.data.curated import iter_curated as iterate
    elif fmt == "webperson":
        from gadms.data.webperson import iter_webperson as iterate
    else:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(CORPUS_FORMATS)}")
    pairs: list[Pair] = []
    for image, sample in enumerate(iterate(root)):
        pairs += [Pair(sample.image, caption, image) for caption in sample.captions]
    return pairs


def benchmark_pairs(benchmark: str, root: Path) -> tuple[list[Pair], int]:
    """Fine-tuning pairs of a benchmark's train split and its number of identities."""
    split = load_benchmark(benchmark, root, "train")
    pairs = [
        Pair(split.images[image], caption, split.image_ids[image])
        for caption, image in zip(split.captions, split.caption_image)
    ]
    return with_partners(pairs, list(split.caption_image)), split.num_identities


def pretrain_settings(params: Params) -> RunSettings:
    """RunSettings of GA-DMS pre-training (SPEC 5.4)."""
    t = params.train
    return RunSettings(
        "gadms",
        t.epochs,
        t.batch_size,
        t.optimizer,
        t.warmup_epochs,
        t.schedule,
        t.grad_clip,
        t.grad_accumulation,
        t.amp,
        t.num_workers,
        "random",
        seed=params.seed,
        lr_step=t.lr_step,
        checkpoint_every_steps=t.checkpoint_every_steps,
    )


def finetune_settings(params: Params) -> RunSettings:
    """RunSettings of IRRA-style fine-tuning (identity-aware batches, 15% MLM)."""
    t, f = params.train, params.finetune
    optimizer = t.optimizer.model_copy(update={"lr": f.lr})
    return RunSettings(
        "irra",
        f.epochs,
        f.batch_size,
        optimizer,
        f.warmup_epochs,
        t.schedule,
        t.grad_clip,
        t.grad_accumulation,
        t.amp,
        t.num_workers,
        f.sampler,
        2,
        f.mlm_probability,
        params.seed,
        t.lr_step,
        t.checkpoint_every_steps,
        GroupRule(f.head_lr_factor, f.bias_lr_factor, f.bias_weight_decay),
    )


def finetune_loss(params: Params) -> LossConfig:
    """Fine-tuning's losses: ``loss`` with ID set by ``finetune.id_loss``, MLM weighted by ``finetune.mlm_weight``."""
    loss, f = params.loss, params.finetune
    update = {
        "id": loss.id.model_copy(update={"enabled": f.id_loss}),
        "mtp": loss.mtp.model_copy(update={"weight": f.mlm_weight}),
    }
    return LossConfig.model_validate(loss.model_copy(update=update).model_dump())


def _dataset(params: Params, pairs: list[Pair], context_length: int) -> PairDataset:
    if not pairs:
        raise ValueError("no training pairs: the corpus is empty or every record was rejected")
    m = params.model
    transform = image_transform(m.image_height, m.image_width, params.augment)
    return PairDataset(pairs, transform, tokenizer(context_length), seed=params.seed, partners=params.loss.tic.enabled)


def pretrain_pairs(params: Params, pairs: list[Pair]) -> list[Pair]:
    """Corpus pairs (identity = image) with TIC partners; ``train.identity: caption``: one identity per caption."""
    pairs = with_partners(pairs, [p.identity for p in pairs])
    if params.train.identity == "caption":
        pairs = [Pair(p.image, p.caption, i, p.partner) for i, p in enumerate(pairs)]
    return pairs


def pretrain_dataset(params: Params, fmt: str, root: Path | str) -> PairDataset | StreamingPairs:
    """The pre-training input: a stream for curated shards and WebPerson Parquet, a benchmark's train split in memory.

    Args:
        params: the parameters (model sizes, augmentation, ``train.stream``, ``train.identity``, TIC on or off).
        fmt: ``curated``, ``webperson`` or a benchmark name.
        root: the corpus directory; curated and WebPerson corpora may be a URL (``s3://bucket/webperson``).

    Returns:
        The dataset the trainer reads.
    """
    if fmt not in ("curated", "webperson"):
        local = local_path(location(root), f"a {fmt} corpus")
        pairs = pretrain_pairs(params, corpus_pairs(fmt, local))
        if params.train.grad_accumulation > 1:  # one short batch trains only without accumulation
            require_batch_fits(len(pairs), params.train.batch_size, "train.batch_size", f"the {fmt} train split")
        return _dataset(params, pairs, params.model.context_length)
    shards = curated_index(root) if fmt == "curated" else webperson_index(root)
    m = params.model
    transform = image_transform(m.image_height, m.image_width, params.augment)
    return StreamingPairs(
        shards,
        transform,
        tokenizer(m.context_length),
        params.seed,
        params.train.stream,
        partners=params.loss.tic.enabled,
        identity=params.train.identity,
    )


def load_any_model(path: Path) -> PersonRetrievalModel:
    """A model from ``model.safetensors``, a training ``checkpoint.pt``, or a run directory holding either.

    Args:
        path: the file or run directory.

    Returns:
        The model, on the CPU.

    Raises:
        ModelFileError: one line naming the file and what is wrong with it (a ``FileNotFoundError`` when none is there).
    """
    path = Path(path)
    if path.is_dir():
        path = path / FINAL_MODEL if (path / FINAL_MODEL).is_file() else path / CHECKPOINT
    if not path.exists():  # a FIFO or device named like a model is refused by the reader, in one line
        raise FileNotFoundError(f"{path}: no model here (expected {FINAL_MODEL} or {CHECKPOINT})")
    if path.suffix == ".safetensors":
        return load_model(path)
    state = require_entries(read_torch_file(path), path, ("architecture", "model"), "gadms training checkpoint")
    return build_with_weights(Architecture.from_json(state["architecture"], path), state["model"], path)


def seeded_model(arch: Architecture, seed: int) -> PersonRetrievalModel:
    """A freshly initialised model whose weights depend only on ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PersonRetrievalModel(arch)


def run_pretrain(
    params: Params,
    data: Path | str,
    fmt: str,
    out: Path,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> tuple[PersonRetrievalModel, list[EpochLog]]:
    """GA-DMS pre-training on a caption corpus; writes ``out/checkpoint.pt`` and ``out/model.safetensors``."""
    model = seeded_model(Architecture.from_config(params.model), params.seed)
    if params.model.pretrained and not (resume and (Path(out) / CHECKPOINT).is_file()):
        model.load_clip_weights(params.model.pretrained)
    dataset = pretrain_dataset(params, fmt, data)
    record = resume_settings(params, "pretrain")
    trainer = Trainer(
        model, dataset, pretrain_settings(params), params.model, params.loss, out, device, progress, on_epoch, record
    )
    return model, trainer.fit(resume=resume)


def run_finetune(
    params: Params,
    benchmark: str,
    root: Path,
    init: Path | None,
    out: Path,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> tuple[PersonRetrievalModel, list[EpochLog]]:
    """IRRA-style fine-tuning on a benchmark's train split, from ``init`` (a pre-trained model) or CLIP weights."""
    pairs, num_ids = benchmark_pairs(benchmark, Path(root))
    f = params.finetune
    require_batch_fits(len(pairs), f.batch_size, "finetune.batch_size", f"the {benchmark} train split")
    arch = Architecture.from_config(params.model, num_identities=num_ids if f.id_loss else 0)
    model = seeded_model(arch, params.seed)
    if init is not None:
        source = load_any_model(init)
        if (source.arch.backbone, source.arch.image_height, source.arch.image_width) != (
            arch.backbone,
            arch.image_height,
            arch.image_width,
        ):
            raise ValueError(
                f"{init}: pre-trained as {source.arch.backbone} "
                f"{source.arch.image_height}x{source.arch.image_width}, "
                f"params ask for {arch.backbone} {arch.image_height}x{arch.image_width}"
            )
        weights = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
        model.load_state_dict(weights, strict=False)
    elif params.model.pretrained:
        model.load_clip_weights(params.model.pretrained)
    dataset = _dataset(params, pairs, arch.context_length)
    settings, loss = finetune_settings(params), finetune_loss(params)
    record = resume_settings(params, "finetune")
    trainer = Trainer(model, dataset, settings, params.model, loss, out, device, progress, on_epoch, record)
    return model, trainer.fit(resume=resume)
