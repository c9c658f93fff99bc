"""The model, its losses and how it is trained, fine-tuned, augmented and evaluated (SPEC 5-6)."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from gadms.config.base import Section


class GassConfig(Section):
    layers: int = Field(8, ge=1, description="last L text layers (paper: 8 of 12)")
    scales: tuple[int, ...] = Field((1, 2), min_length=1, description="multi-scale pooling window sizes C")
    # paper: the text's formulas; official: the released code's (single-head re-run, cosine query-key weight
    # min-maxed over all positions, attention over the importance sum, scores over the batch maximum)
    variant: Literal["paper", "official"] = Field(
        "paper", description="paper | official (single-head re-run, cosine q-k weight, batch-max scaling)"
    )

    @model_validator(mode="after")
    def _positive_scales(self) -> "GassConfig":
        if any(s < 1 for s in self.scales):
            raise ValueError("every scale must be >= 1")
        return self


class MaskingConfig(Section):
    score: Literal["none", "random", "cosine", "gass"] = Field("gass", description="none | random | cosine | gass")
    alpha_noise: float = Field(0.2, ge=0, le=1, description="alpha_n")
    alpha_informative: float = Field(0.3, ge=0, le=1, description="alpha_i")
    slope: float = Field(10.0, gt=0, description="lambda of the masking sigmoid")
    noise_midpoint: float = Field(0.5, ge=0, le=1, description="gamma_n, compared with 1 - s")
    informative_midpoint: float = Field(0.5, ge=0, le=1, description="gamma_i, compared with s")
    score_timing: Literal["fresh", "previous_epoch"] = Field(
        "fresh", description="fresh (every step) | previous_epoch (stored per caption)"
    )
    initial_score: float = Field(0.85, ge=0, le=1, description="previous_epoch: every token's score in epoch 1")
    replacement: Literal["mask", "bert"] = Field(
        "mask", description="mask | bert (80% mask token, 10% random token, 10% kept)"
    )
    mtp_at_least_one: bool = Field(False, description="mask the first word of a caption with no MTP target")
    noise_at_least_one: bool = Field(False, description="the same for the noise-masked caption (official: true)")


class InteractionConfig(Section):
    cross_attention_heads: int = Field(8, ge=1)
    layers: int = Field(4, ge=1)
    # project: input layers on the unprojected states, patch tokens, a residual round the cross-attention;
    # irra: projected text and image tokens (with the image's CLS), no residual, IRRA's initialisation
    variant: Literal["project", "irra"] = Field(
        "project", description="project | irra (projected tokens with CLS, no residual)"
    )
    activation: Literal["gelu", "quick_gelu"] = Field(
        "gelu", description="gelu | quick_gelu (official) in its MLPs and vocabulary head"
    )


class ModelConfig(Section):
    backbone: Literal["tiny", "ViT-B-16"] = Field(
        "tiny", description="tiny (CPU tests, demo; 128x64) | ViT-B-16 (the paper's; 384x128)"
    )
    pretrained: Optional[str] = Field(
        None, description="local checkpoint path (open_clip or OpenAI .pt), or an open_clip tag"
    )
    image_height: int = Field(128, ge=16, description="the paper: 384 with ViT-B-16")
    image_width: int = Field(64, ge=16, description="the paper: 128 with ViT-B-16")
    context_length: int = Field(77, ge=4)
    gass: GassConfig = GassConfig()
    masking: MaskingConfig = MaskingConfig()
    interaction: InteractionConfig = Field(
        InteractionConfig(), description="cross-modal encoder for masked-token prediction"
    )


class LossTerm(Section):
    FLOW: ClassVar[bool] = True

    enabled: bool = True
    weight: float = Field(1.0, ge=0)


class TicTerm(LossTerm):
    enabled: bool = False
    weight: float = Field(0.1, ge=0)
    hard_negatives: int = Field(16, ge=1)


class LossConfig(Section):
    temperature: float = Field(0.02, gt=0, description="tau of SDM / ITC")
    sdm: LossTerm = LossTerm()
    mtp: LossTerm = Field(LossTerm(weight=0.4), description="beta")
    itc: LossTerm = Field(
        LossTerm(enabled=True), description="not in the paper: helps the tiny model learn from scratch"
    )
    id: LossTerm = LossTerm(enabled=False)
    tic: TicTerm = Field(TicTerm(), description="textual intra-modal contrastive (FG-CLIP 2)")


class OptimizerConfig(Section):
    lr: float = Field(5e-4, gt=0, description="paper: 1e-4 (from pre-trained CLIP)")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, description="paper: 1e-3")
    weight_decay: float = Field(4e-5, ge=0)

    @model_validator(mode="after")
    def _betas_in_range(self) -> "OptimizerConfig":
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must each lie in [0, 1)")
        return self


class StreamConfig(Section):
    """Streaming pre-training input (curated shards, WebPerson Parquet): see ``gadms.data.streaming``."""

    slots: int = Field(4, ge=1, description="stream slices per process; num_workers must divide it")
    buffer_pairs: int = Field(2000, ge=1, description="shuffle buffer per process, in caption-image pairs ...")
    buffer_mb: float = Field(192.0, gt=0, description="... and in MB of encoded images, whichever fills first")
    prefetch: int = Field(2, ge=1, description="batches each loader worker prepares ahead")


class TrainConfig(Section):
    epochs: int = Field(12, ge=1, description="paper: 30")
    batch_size: int = Field(32, ge=1, description="global batch; paper: 512")
    optimizer: OptimizerConfig = OptimizerConfig()
    warmup_epochs: int = Field(1, ge=0, description="paper: 5")
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(5.0, ge=0)
    grad_accumulation: int = Field(1, ge=1)
    lr_step: Literal["step", "epoch"] = Field("step", description="step | epoch: how often the schedule advances")
    identity: Literal["image", "caption"] = Field(
        "image", description="image | caption: what one identity is in pre-training's SDM"
    )
    amp: bool = Field(True, description="mixed precision on CUDA only")
    num_workers: int = Field(1, ge=0)
    gpus: int = Field(0, ge=0, description=">1 launches torchrun with that many processes")
    checkpoint_every_steps: int = Field(
        0, ge=0, description="also checkpoint mid-epoch every N optimiser steps (0: per epoch)"
    )
    stream: StreamConfig = Field(
        StreamConfig(), description="curated / WebPerson input is streamed (gadms.data.streaming)"
    )


class FinetuneConfig(Section):
    epochs: int = Field(5, ge=1, description="IRRA: 60")
    batch_size: int = Field(32, ge=1, description="IRRA: 64")
    lr: float = Field(1e-4, gt=0, description="IRRA: 1e-5")
    warmup_epochs: int = Field(1, ge=0, description="IRRA: 5")
    mlm_probability: float = Field(0.15, ge=0, le=1)
    mlm_weight: float = Field(0.4, ge=0, description="weight of the MLM term")
    id_loss: bool = False
    sampler: Literal["identity", "random"] = Field("identity", description="identity (2 pairs per identity) | random")
    # learning-rate groups (IRRA's released recipe: 5, 2, 0): the cross-modal encoder, MLM head and identity
    # classifier train at head_lr_factor x lr; biases at bias_lr_factor x lr with bias_weight_decay (null: the same)
    head_lr_factor: float = Field(
        1.0, gt=0, description="lr x this for the cross-modal encoder, MLM head, classifier (IRRA: 5)"
    )
    bias_lr_factor: float = Field(1.0, gt=0, description="lr x this for biases (IRRA: 2)")
    bias_weight_decay: Optional[float] = Field(
        None, ge=0, description="biases' weight decay; null: train.optimizer.weight_decay (IRRA: 0)"
    )


class AugmentConfig(Section):
    horizontal_flip: bool = True
    pad_crop: bool = True
    color_jitter: bool = True
    random_erasing: bool = True
    erasing_max_area: float = Field(0.2, ge=0.02, le=1, description="erased share of the image: 0.02 .. this")
    # normalised pixels set to 0, or to CLIP's mean (official)
    erasing_fill: Literal["zero", "mean"] = Field(
        "zero", description="zero (the mean colour) | mean (CLIP's mean values, the official code's)"
    )


Benchmark = Literal["cuhk-pedes", "icfg-pedes", "rstpreid"]


class EvalConfig(Section):
    benchmarks: tuple[Benchmark, ...] = ("cuhk-pedes", "icfg-pedes", "rstpreid")
    query_chunk: int = Field(4096, ge=1, description="queries scored per block")
    image_to_text: bool = False
