"""The whole of params.yaml (:class:`Params`) and the rules that span its sections (:data:`WHOLE_RULES`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from gadms.config.ablation import AblateConfig
from gadms.config.base import BACKBONE_SHAPES, CLIP_CONTEXT, Section, Seed
from gadms.config.data import CurationConfig, PathsConfig, SynthConfig, ValidationConfig
from gadms.config.learning import (
    AugmentConfig,
    EvalConfig,
    FinetuneConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from gadms.config.operations import OrchestrationConfig, PipelineConfig, TrackingConfig, VersioningConfig


class Params(Section):
    """The whole of params.yaml."""

    seed: Seed = 0
    paths: PathsConfig = PathsConfig()
    synth: SynthConfig = Field(SynthConfig(), description="the built-in synthetic person world")
    curation: CurationConfig = CurationConfig()
    validation: ValidationConfig = Field(ValidationConfig(), description="SPEC 4, the caption quality gate")
    model: ModelConfig = Field(ModelConfig(), description="SPEC 5")
    loss: LossConfig = Field(LossConfig(), description="SPEC 5.3")
    train: TrainConfig = Field(TrainConfig(), description="pre-training (the paper, SPEC 5.4: see params.full.yaml)")
    finetune: FinetuneConfig = Field(
        FinetuneConfig(), description="IRRA-style, per benchmark (paper scale: params.full.yaml)"
    )
    augment: AugmentConfig = AugmentConfig()
    eval: EvalConfig = Field(EvalConfig(), description="SPEC 6")
    tracking: TrackingConfig = TrackingConfig()
    versioning: VersioningConfig = VersioningConfig()
    orchestration: OrchestrationConfig = Field(OrchestrationConfig(), description="Prefect (flows/)")
    pipeline: PipelineConfig = Field(PipelineConfig(), description="the main job (gadms pipeline)")
    ablate: AblateConfig = Field(
        AblateConfig(), description="gadms ablate: Table 4 rows x seeds (the tuned testbed: params.ablate.yaml)"
    )

    @model_validator(mode="after")
    def _as_a_whole(self) -> "Params":
        """Rules across keys (each message names its keys): what no run could train with."""
        for rule in WHOLE_RULES:
            rule(self)
        return self


def _heads_divide_width(p: Params) -> None:
    """The interaction encoder's heads split its width evenly (the towers' heads are fixed by the backbone)."""
    m = p.model
    shape = BACKBONE_SHAPES[m.backbone]
    width = shape["embed_dim"] if m.interaction.variant == "irra" else shape["text_width"]
    heads = m.interaction.cross_attention_heads
    if width % heads:
        fits = ", ".join(str(h) for h in range(1, 33) if width % h == 0)
        raise ValueError(
            f"model.interaction.cross_attention_heads: {heads} heads do not divide the width {width} of the "
            f"interaction encoder (model.backbone {m.backbone}, model.interaction.variant {m.interaction.variant}); "
            f"choose one of {fits}"
        )


def _image_fits_patches(p: Params) -> None:
    """Both image sides are whole multiples of the backbone's patch size."""
    m = p.model
    patch = BACKBONE_SHAPES[m.backbone]["patch_size"]
    if m.image_height % patch or m.image_width % patch:
        raise ValueError(
            f"model.image_height, model.image_width: {m.image_height}x{m.image_width} is not a multiple of "
            f"model.backbone {m.backbone}'s patch size {patch}"
        )


def _context_fits_clip(p: Params) -> None:
    """Captions are no longer than CLIP's text positions."""
    if p.model.context_length > CLIP_CONTEXT:
        raise ValueError(
            f"model.context_length: {p.model.context_length} is longer than the {CLIP_CONTEXT} text positions of "
            f"CLIP's tokenizer and model.backbone {p.model.backbone}"
        )


def _batches_split_evenly(p: Params) -> None:
    """Each batch splits evenly over processes, accumulation steps and (identity sampler) pairs per identity."""
    t, f = p.train, p.finetune
    parts = max(t.gpus, 1) * t.grad_accumulation
    pairs = 2 if f.sampler == "identity" else 1
    for key, batch, need, what in (
        ("train.batch_size", t.batch_size, parts, "train.gpus x train.grad_accumulation"),
        ("finetune.batch_size", f.batch_size, parts * pairs, _finetune_split(pairs)),
    ):
        if batch % need:
            raise ValueError(f"{key}: {batch} is not a multiple of {what} = {need}")


def _finetune_split(pairs: int) -> str:
    """How the fine-tuning batch is split, in words."""
    split = "train.gpus x train.grad_accumulation"
    return f"{split} x 2 pairs per identity (finetune.sampler identity)" if pairs == 2 else split


def _workers_divide_slots(p: Params) -> None:
    """Each loader worker of a stream reads the same number of stream slots."""
    s = p.train
    if s.num_workers and s.stream.slots % s.num_workers:
        raise ValueError(
            f"train.num_workers, train.stream.slots: {s.num_workers} workers do not divide {s.stream.slots} slots"
        )


def _some_loss_trains(p: Params) -> None:
    """Pre-training has at least one loss term on with a weight above 0."""
    terms = ("sdm", "itc", "mtp", "tic")
    if not any(getattr(p.loss, t).enabled and getattr(p.loss, t).weight > 0 for t in terms):
        keys = ", ".join(f"loss.{t}.enabled" for t in terms)
        raise ValueError(f"{keys}: every loss term is off or weighted 0; nothing would train")


WHOLE_RULES = (
    _heads_divide_width,
    _image_fits_patches,
    _context_fits_clip,
    _batches_split_evenly,
    _workers_divide_slots,
    _some_loss_trains,
)
