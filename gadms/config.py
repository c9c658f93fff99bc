"""Typed, validated parameters loaded from params.yaml.

Every section of params.yaml maps to a frozen pydantic model. Loading fails
with a :class:`ConfigError` whose message is one line naming the offending key,
e.g. ``params.yaml: model.masking.alpha_noise: must be <= 1 (got 1.5)``.
Parameter files are read by :mod:`gadms.safe_yaml` (size, nesting and alias
limits, no duplicate keys), and no number may be infinite or NaN. Rules across keys (attention heads divide
the width, image sides a multiple of the patch size, batches that split evenly, MLflow's name and alias rules,
IANA time zones) run on the whole (:data:`WHOLE_RULES`, section validators), each a line naming its keys. This
module imports nothing else from ``gadms`` but the YAML reader and, for the secret check, the credential finder.
"""

from __future__ import annotations

import functools
import posixpath
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gadms.safe_yaml import YamlLimitError, load_bounded, shorten

DEFAULT_PARAMS = Path("params.yaml")
PARAMS_READ_TIMEOUT_S = 10.0  # a params file read (a slow mount included) that takes longer is refused
MAX_PARAMS_BYTES = 1 << 20  # a params file is a few kB; refuse anything past 1 MiB unread
MAX_SEED = 2**64 - 1  # what torch.manual_seed accepts
# every seed: a whole number 0..MAX_SEED, strictly an integer (``true`` or ``1.0`` is refused, not read as 1)
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]

# What params.yaml may choose per backbone: gadms.model.backbone.BACKBONES is the source (a test keeps these equal);
# the interaction encoder is as wide as the text tower (variant project) or the joint embedding (variant irra).
BACKBONE_SHAPES: dict[str, dict[str, int]] = {
    "ViT-B-16": {"text_width": 512, "embed_dim": 512, "patch_size": 16},
    "tiny": {"text_width": 64, "embed_dim": 64, "patch_size": 16},
}
CLIP_CONTEXT = 77  # CLIP's text positions: the tokenizer's and the released weights' length
DEVICE_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
# MLflow's registry rules (mlflow.utils.validation, file store): what it would refuse at registration
MLFLOW_ALIAS = re.compile(r"^[\w\-]+$")
MLFLOW_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
MLFLOW_NAME_CHARS = ("/", ":", "\\", "%")


class ConfigError(ValueError):
    """A parameter file or override is invalid; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PathsConfig(_Section):
    data_dir: Path = Path("data")
    work_dir: Path = Path("work")
    checkpoints_dir: Path = Path("checkpoints")
    mlruns_dir: Path = Path("mlruns")
    web_dir: Path | str = Path("work/web")  # or a URL: s3://bucket/shards (see gadms.storage)
    benchmarks_dir: Path = Path("work/benchmarks")
    templates_file: Path = Path("work/templates.json")
    reports_dir: Path = Path("work/reports")

    @field_validator("web_dir", mode="before")
    @classmethod
    def _url_or_path(cls, value: Any) -> Path | str:
        """A URL stays a string (``Path`` would turn ``s3://b`` into ``s3:/b``); anything else is a path."""
        text = str(value)
        return text if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) else Path(text)


class SplitFractions(_Section):
    train: float = Field(0.7, gt=0.0, lt=1.0)
    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitFractions":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1 (got {total:g})")
        return self


class SynthConfig(_Section):
    image_width: int = Field(640, ge=160, le=4096)
    image_height: int = Field(480, ge=160, le=4096)
    max_people: int = Field(3, ge=0, le=10)
    shard_size: int = Field(100, ge=1)
    jpeg_quality: int = Field(90, ge=1, le=100)
    occlusion_probability: float = Field(0.3, ge=0.0, le=1.0)
    min_images_per_identity: int = Field(2, ge=1)
    max_images_per_identity: int = Field(4, ge=1)
    captions_per_image: int = Field(2, ge=1, le=10)
    split_fractions: SplitFractions = SplitFractions()
    caption_noise: float = Field(0.0, ge=0.0, le=1.0)
    caption_noise_words: int = Field(1, ge=1, le=8)  # wrong attribute words in each noisy caption

    @model_validator(mode="after")
    def _image_range(self) -> "SynthConfig":
        if self.min_images_per_identity > self.max_images_per_identity:
            raise ValueError("min_images_per_identity must be <= max_images_per_identity")
        return self


class SourceConfig(_Section):
    format: Literal["auto", "webdataset", "folder", "parquet"] = "auto"
    folder_shard_size: int = Field(1000, ge=1)
    max_member_bytes: int = Field(32 * 2**20, ge=1)  # larger images (tar member, file, Parquet cell): too_large
    max_image_pixels: int = Field(16_000_000, ge=1)  # larger width*height: too_large, refused before decoding
    max_row_group_bytes: int = Field(64 * 2**20, ge=1)  # a Parquet row group with more image bytes: too_large


class DetectorConfig(_Section):
    backend: Literal["precomputed", "yolo"] = "precomputed"
    detector_weights: Optional[Path] = None
    pose_weights: Optional[Path] = None
    batch_size: int = Field(8, ge=1)
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        """A device name torch knows; whether this machine has it is checked when the detector starts."""
        if not DEVICE_NAME.fullmatch(value):
            raise ValueError(f"{shorten(value)} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return value


class FilterConfig(_Section):
    min_short_side: float = Field(90, ge=0)
    min_aspect: float = Field(0.25, gt=0)
    max_aspect: float = Field(0.5, gt=0)
    min_confidence: float = Field(0.85, ge=0, le=1)
    min_keypoints: int = Field(8, ge=0, le=17)
    min_hip_keypoints: int = Field(1, ge=0, le=2)
    min_head_keypoints: int = Field(2, ge=0, le=5)
    keypoint_confidence: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _aspect_range(self) -> "FilterConfig":
        if self.min_aspect > self.max_aspect:
            raise ValueError("min_aspect must be <= max_aspect")
        return self


class CropConfig(_Section):
    margin: float = Field(0.1, ge=0, le=1)
    jpeg_quality: int = Field(95, ge=1, le=100)


class TemplatesConfig(_Section):
    extractor: Literal["rule", "llm"] = "rule"
    clusters: int = Field(50, ge=1)
    random_members: int = Field(5, ge=0)
    diversify: bool = False
    embedder: Literal["tiny", "ViT-B-16"] = "tiny"
    embedder_pretrained: Optional[str] = None
    llm_url: str = "http://127.0.0.1:8000/v1"
    llm_model: str = "Qwen/Qwen2.5-72B-Instruct"
    api_key_env: str = "GADMS_LLM_API_KEY"


class CaptioningConfig(_Section):
    backend: Literal["attributes", "vlm"] = "attributes"
    templates_file: Optional[Path] = None
    captions_per_image: int = Field(2, ge=1, le=10)
    max_words: int = Field(60, ge=1)
    vlm_url: str = "http://127.0.0.1:8001/v1"
    vlm_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    api_key_env: str = "GADMS_VLM_API_KEY"
    concurrency: int = Field(16, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)


class CurationConfig(_Section):
    source: SourceConfig = SourceConfig()
    detector: DetectorConfig = DetectorConfig()
    filter: FilterConfig = FilterConfig()
    crop: CropConfig = CropConfig()
    templates: TemplatesConfig = TemplatesConfig()
    captioning: CaptioningConfig = CaptioningConfig()


class MostlyConfig(_Section):
    """Per check: the share of captions (or crops) that must pass it."""

    non_empty: float = Field(1.0, ge=0, le=1)
    valid_text: float = Field(1.0, ge=0, le=1)
    word_count: float = Field(0.99, ge=0, le=1)
    no_speculation: float = Field(0.99, ge=0, le=1)
    no_background: float = Field(0.99, ge=0, le=1)
    mentions_person: float = Field(0.99, ge=0, le=1)
    mentions_attribute: float = Field(0.99, ge=0, le=1)
    no_placeholder: float = Field(1.0, ge=0, le=1)
    crop_size: float = Field(1.0, ge=0, le=1)
    crop_aspect: float = Field(0.99, ge=0, le=1)


class ValidationConfig(_Section):
    min_words: int = Field(5, ge=0)
    max_words: int = Field(80, ge=1)
    max_duplicate_rate: float = Field(0.02, ge=0.0, le=1.0)
    mostly: MostlyConfig = MostlyConfig()
    min_crop_short_side: float = Field(90, ge=0)
    min_crop_aspect: float = Field(0.2, gt=0)
    max_crop_aspect: float = Field(0.7, gt=0)
    # captions validated at once (whole samples): the gate's memory follows it, not the corpus; no threshold
    batch_captions: int = Field(20000, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "ValidationConfig":
        if self.min_words > self.max_words:
            raise ValueError("min_words must be <= max_words")
        if self.min_crop_aspect > self.max_crop_aspect:
            raise ValueError("min_crop_aspect must be <= max_crop_aspect")
        return self


class GassConfig(_Section):
    layers: int = Field(8, ge=1)
    scales: tuple[int, ...] = Field((1, 2), min_length=1)
    # paper: the text's formulas; official: the released code's (single-head re-run, cosine query-key weight
    # min-maxed over all positions, attention over the importance sum, scores over the batch maximum)
    variant: Literal["paper", "official"] = "paper"

    @model_validator(mode="after")
    def _positive_scales(self) -> "GassConfig":
        if any(s < 1 for s in self.scales):
            raise ValueError("every scale must be >= 1")
        return self


class MaskingConfig(_Section):
    score: Literal["none", "random", "cosine", "gass"] = "gass"
    alpha_noise: float = Field(0.2, ge=0, le=1)
    alpha_informative: float = Field(0.3, ge=0, le=1)
    slope: float = Field(10.0, gt=0)
    noise_midpoint: float = Field(0.5, ge=0, le=1)  # gamma_n, compared with 1 - s
    informative_midpoint: float = Field(0.5, ge=0, le=1)  # gamma_i, compared with s
    score_timing: Literal["fresh", "previous_epoch"] = "fresh"  # previous_epoch: each caption's stored scores
    initial_score: float = Field(0.85, ge=0, le=1)  # previous_epoch: the score of every token in epoch 1
    replacement: Literal["mask", "bert"] = "mask"  # bert: 80% mask token, 10% random token, 10% kept
    mtp_at_least_one: bool = False  # a caption with nothing masked for MTP gets its first word masked
    noise_at_least_one: bool = False  # the same for the noise-masked (alignment) caption, as the official code does


class InteractionConfig(_Section):
    cross_attention_heads: int = Field(8, ge=1)
    layers: int = Field(4, ge=1)
    # project: input layers on the unprojected states, patch tokens, a residual round the cross-attention;
    # irra: projected text and image tokens (with the image's CLS), no residual, IRRA's initialisation
    variant: Literal["project", "irra"] = "project"
    activation: Literal["gelu", "quick_gelu"] = "gelu"  # of its MLPs and vocabulary head; official: quick_gelu


class ModelConfig(_Section):
    backbone: Literal["tiny", "ViT-B-16"] = "tiny"
    pretrained: Optional[str] = None
    image_height: int = Field(128, ge=16)
    image_width: int = Field(64, ge=16)
    context_length: int = Field(77, ge=4)
    gass: GassConfig = GassConfig()
    masking: MaskingConfig = MaskingConfig()
    interaction: InteractionConfig = InteractionConfig()


class LossTerm(_Section):
    enabled: bool = True
    weight: float = Field(1.0, ge=0)


class TicTerm(LossTerm):
    enabled: bool = False
    weight: float = Field(0.1, ge=0)
    hard_negatives: int = Field(16, ge=1)


class LossConfig(_Section):
    temperature: float = Field(0.02, gt=0)
    sdm: LossTerm = LossTerm()
    mtp: LossTerm = LossTerm(weight=0.4)
    itc: LossTerm = LossTerm(enabled=True)
    id: LossTerm = LossTerm(enabled=False)
    tic: TicTerm = TicTerm()


class OptimizerConfig(_Section):
    lr: float = Field(5e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(4e-5, ge=0)

    @model_validator(mode="after")
    def _betas_in_range(self) -> "OptimizerConfig":
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must each lie in [0, 1)")
        return self


class StreamConfig(_Section):
    """Streaming pre-training input (curated shards, WebPerson Parquet): see ``gadms.data.streaming``."""

    slots: int = Field(4, ge=1)  # stream slices per process; train.num_workers must divide it
    buffer_pairs: int = Field(2000, ge=1)  # shuffle buffer of a process, in caption-image pairs
    buffer_mb: float = Field(192.0, gt=0)  # ... and in MB of encoded image bytes (whichever fills first)
    prefetch: int = Field(2, ge=1)  # batches each loader worker prepares ahead


class TrainConfig(_Section):
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    warmup_epochs: int = Field(1, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(5.0, ge=0)
    grad_accumulation: int = Field(1, ge=1)
    lr_step: Literal["step", "epoch"] = "step"  # how often the schedule advances
    identity: Literal["image", "caption"] = "image"  # what counts as one identity in pre-training's SDM
    amp: bool = True
    num_workers: int = Field(1, ge=0)
    gpus: int = Field(0, ge=0)
    checkpoint_every_steps: int = Field(0, ge=0)  # also checkpoint mid-epoch every N optimiser steps (0: per epoch)
    stream: StreamConfig = StreamConfig()


class FinetuneConfig(_Section):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    warmup_epochs: int = Field(1, ge=0)
    mlm_probability: float = Field(0.15, ge=0, le=1)
    mlm_weight: float = Field(0.4, ge=0)
    id_loss: bool = False
    sampler: Literal["identity", "random"] = "identity"
    # learning-rate groups (IRRA's released recipe: 5, 2, 0): the cross-modal encoder, MLM head and identity
    # classifier train at head_lr_factor x lr; biases at bias_lr_factor x lr with bias_weight_decay (null: the same)
    head_lr_factor: float = Field(1.0, gt=0)
    bias_lr_factor: float = Field(1.0, gt=0)
    bias_weight_decay: Optional[float] = Field(None, ge=0)


class AugmentConfig(_Section):
    horizontal_flip: bool = True
    pad_crop: bool = True
    color_jitter: bool = True
    random_erasing: bool = True
    erasing_max_area: float = Field(0.2, ge=0.02, le=1)  # erased area: 0.02 .. this share of the image
    erasing_fill: Literal["zero", "mean"] = "zero"  # normalised pixels set to 0, or to CLIP's mean (official)


Benchmark = Literal["cuhk-pedes", "icfg-pedes", "rstpreid"]


class EvalConfig(_Section):
    benchmarks: tuple[Benchmark, ...] = ("cuhk-pedes", "icfg-pedes", "rstpreid")
    query_chunk: int = Field(4096, ge=1)
    image_to_text: bool = False


class TrackingConfig(_Section):
    uri: Optional[str] = None
    experiment: str = Field("gadms", min_length=1)
    registered_model: str = Field("gadms-person-retrieval", min_length=1)
    champion_alias: str = Field("champion", min_length=1)

    @model_validator(mode="after")
    def _no_credentials_in_names(self) -> "TrackingConfig":
        from gadms.tracking.credentials import find_credential

        for key in ("experiment", "registered_model", "champion_alias"):
            kind = find_credential(getattr(self, key))
            if kind:
                raise ValueError(f"tracking.{key} holds {kind}; a name is shown to everyone and must hold no secret")
        return self

    @model_validator(mode="after")
    def _mlflow_names(self) -> "TrackingConfig":
        """MLflow's rules for the names, checked at load (it refuses them at registration); after the secret check."""
        for key, rule in (
            ("registered_model", mlflow_model_name_problem),
            ("champion_alias", mlflow_alias_problem),
            ("experiment", lambda name: "must be at most 500 characters (MLflow's limit)" if len(name) > 500 else None),
        ):
            problem = rule(getattr(self, key))
            if problem:
                raise ValueError(f"tracking.{key}: {problem}")
        return self


def mlflow_model_name_problem(value: str) -> str | None:
    """What MLflow's registry would refuse in a registered model name (None: nothing)."""
    bad = [c for c in MLFLOW_NAME_CHARS if c in value]
    if not value.strip() or len(value) > 256:
        return "must be 1 to 256 characters, not only spaces (MLflow's limit)"
    if bad:
        return f"MLflow refuses {bad[0]!r} in a registered model name (got {shorten(value)})"
    norm = posixpath.normpath(value)
    if norm != value or norm == "." or norm.startswith(".."):
        return f"MLflow refuses a model name that reads as a path like {shorten(value)}"
    return None


def mlflow_alias_problem(value: str) -> str | None:
    """What MLflow refuses in an alias: other than letters, digits, ``_``, ``-``; ``latest``; version-like ``v1``."""
    if not MLFLOW_ALIAS.fullmatch(value) or len(value) > 255:
        return f"{shorten(value)} is not an MLflow alias: 1 to 255 letters, digits, '_' or '-'"
    if value.lower() == "latest" or MLFLOW_VERSION_ALIAS.fullmatch(value):
        return f"{value!r} is reserved by MLflow ('latest' and version aliases like 'v1'); pick another"
    return None


class VersioningConfig(_Section):
    remote_name: str = Field("local", min_length=1)
    remote_url: str = Field(".dvc-storage", min_length=1)


class OrchestrationConfig(_Section):
    task_runner: Literal["thread", "dask"] = "thread"
    max_workers: int = Field(2, ge=1)
    dask_address: Optional[str] = None
    retries: int = Field(3, ge=0)
    retry_delays_s: tuple[float, ...] = (2.0, 5.0, 15.0)
    cache_results: bool = True
    schedule_cron: str = "0 3 * * 1"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        """An IANA time zone name, as Prefect's schedules require (``Europe/Berlin``, ``UTC``)."""
        return valid_time_zone(value)

    @field_validator("retry_delays_s")
    @classmethod
    def _delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        """Waits between retries: none negative."""
        if any(d < 0 for d in value):
            raise ValueError("every delay must be >= 0")
        return value


def valid_time_zone(value: str) -> str:
    """``value`` if it is an IANA time zone name Prefect accepts, else a ``ValueError`` saying so.

    Prefect checks schedules against :func:`zoneinfo.available_timezones`, so a name like ``utc`` or
    ``America`` (a folder of the database) is refused here too.
    """
    if value not in _time_zones():
        raise ValueError(f"{shorten(value)} is not an IANA time zone name (e.g. UTC, Europe/Berlin)")
    return value


@functools.lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    """The IANA names this machine's time zone database holds (read once)."""
    return frozenset(zoneinfo.available_timezones())


class PipelineConfig(_Section):
    synthesize: bool = True
    web_scenes: int = Field(300, ge=1)
    benchmark_identities: int = Field(120, ge=2)


AblationRow = Literal["none", "random", "cosine", "gass", "gass-official", "gass-no-mtp", "random-no-mtp"]


class AblateCorpusConfig(_Section):
    """A synthetic benchmark of the ablation testbed (``gadms synth benchmark`` with these values)."""

    identities: int = Field(200, ge=3)
    seed: Seed = 1
    caption_noise: float = Field(0.3, ge=0, le=1)  # share of train captions with wrong attribute words
    caption_noise_words: int = Field(1, ge=1, le=8)  # wrong words per noisy caption
    split_fractions: SplitFractions = SplitFractions()


class AblateBaseConfig(_Section):
    """The base stage: the tiny model pre-trained on clean captions, a stand-in for public CLIP weights."""

    enabled: bool = True  # false, or model.pretrained set: the rows start from model.pretrained / from scratch
    corpus: AblateCorpusConfig = AblateCorpusConfig(
        identities=400, seed=3, caption_noise=0.0, split_fractions=SplitFractions(train=0.9, val=0.05, test=0.05)
    )
    epochs: int = Field(10, ge=1)
    lr: float = Field(5e-4, gt=0)
    cache_dir: Path = Path("work/ablate-base")  # base-<hash of its inputs>/clip.safetensors


class AblateConfig(_Section):
    """``gadms ablate``: the paper's Table 4 rows x seeds on a noisy corpus, evaluated on unseen identities."""

    rows: tuple[AblationRow, ...] = Field(
        ("none", "random", "cosine", "gass", "gass-official", "gass-no-mtp"), min_length=1
    )
    seeds: tuple[Seed, ...] = Field((0, 1, 2), min_length=1)
    corpus: AblateCorpusConfig = AblateCorpusConfig()  # the noisy GA-DMS corpus (its train split is used)
    held_out: AblateCorpusConfig = AblateCorpusConfig(
        identities=200, seed=2, caption_noise=0.0, split_fractions=SplitFractions(train=0.05, val=0.05, test=0.9)
    )  # evaluated on its test split: identities no training stage saw
    base: AblateBaseConfig = AblateBaseConfig()
    out_dir: Path = Path("work/ablate")

    @model_validator(mode="after")
    def _distinct(self) -> "AblateConfig":
        if len(set(self.rows)) != len(self.rows) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("rows and seeds must not repeat")
        if len({self.corpus.seed, self.held_out.seed, self.base.corpus.seed}) < 3:
            raise ValueError("corpus, held_out and base.corpus need different seeds (different identities)")
        return self


class Params(_Section):
    """The whole of params.yaml."""

    seed: Seed = 0
    paths: PathsConfig = PathsConfig()
    synth: SynthConfig = SynthConfig()
    curation: CurationConfig = CurationConfig()
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    augment: AugmentConfig = AugmentConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    versioning: VersioningConfig = VersioningConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    pipeline: PipelineConfig = PipelineConfig()
    ablate: AblateConfig = AblateConfig()

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


def _describe(error: dict[str, Any]) -> str:
    """Turn one pydantic error into 'dotted.key: reason (got value)'."""
    key = ".".join(str(part) if len(str(part)) <= 40 else shorten(part, 40) for part in error["loc"]) or "<root>"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    if kind == "missing":
        return f"{key}: required key is missing"
    bounds = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
    }
    if kind in bounds:
        shown = {k: f"{v:g}" if isinstance(v, (int, float)) and abs(v) < 1e16 else v for k, v in ctx.items()}
        reason = bounds[kind].format(**shown)
    elif kind == "value_error":
        reason = str(ctx.get("error", error["msg"]))
    else:
        reason = error["msg"][0].lower() + error["msg"][1:]
    if kind == "value_error" and (not error["loc"] or reason.startswith(f"{key}.")):
        return reason  # a rule across keys names them itself
    if kind == "value_error" or "input" not in error or isinstance(error["input"], dict):
        return f"{key}: {reason}"
    return f"{key}: {reason} (got {shorten(error['input'])})"


def params_from_dict(raw: Any, source: str = "params") -> Params:
    """Validate a plain mapping into :class:`Params`.

    Args:
        raw: the parsed YAML document.
        source: name used in error messages (usually the file path).

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: one line naming the first invalid key.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(dict(errors[0]))}{more}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and YAML-parsed value."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {shorten(text)}: expected KEY=VALUE with a dotted key, e.g. train.optimizer.lr=3e-4")
    key = key if len(key) <= 80 else shorten(key, 80)
    try:
        parsed = load_bounded(value) if value.strip() else None
    except YamlLimitError as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value {shorten(value)} is not valid YAML") from None
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``section.key=value`` override applied.

    Keys that are not in the schema are rejected later by validation, so a typo
    in an override fails just like a typo in the file.
    """
    result = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"--set {'.'.join(path)}: {where} is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing, oversized or broken files.

    Args:
        path: the parameter file (at most ``MAX_PARAMS_BYTES``).

    Returns:
        The mapping (empty for an empty file).

    Raises:
        ConfigError: one line naming the file (and line) and what is wrong.
    """
    from gadms.safe_files import MISSING, TOO_LARGE, UnsafeFile, read_file  # here: safe_files imports this module

    path = Path(path)
    try:  # the one way in: a FIFO, device or socket is refused without blocking, the read is capped
        data = read_file(path, max_bytes=MAX_PARAMS_BYTES, timeout_s=PARAMS_READ_TIMEOUT_S)
    except UnsafeFile as exc:
        if exc.reason == MISSING and not path.exists():
            raise ConfigError(f"{path}: parameter file not found") from None
        if exc.reason == TOO_LARGE:
            raise ConfigError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes; not a parameter file") from None
        raise ConfigError(f"{exc.detail}; not a parameter file") from None
    try:
        raw = load_bounded(data.decode("utf-8"))
    except YamlLimitError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: Path | str | None = None, overrides: Iterable[str] = ()) -> Params:
    """Load params.yaml (or ``path``), apply ``--set`` overrides, validate.

    Args:
        path: parameter file; defaults to ``params.yaml`` in the working
            directory, or the built-in defaults when that file does not exist.
        overrides: ``section.key=value`` strings applied on top of the file.

    Returns:
        The frozen, validated parameters.
    """
    if path is None and not DEFAULT_PARAMS.is_file():
        raw: dict[str, Any] = {}
        source = "defaults"
    else:
        path = Path(path) if path is not None else DEFAULT_PARAMS
        raw = read_yaml(path)
        source = str(path)
    overrides = list(overrides)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} + --set"
    return params_from_dict(raw, source)


def flatten(params: Params) -> dict[str, Any]:
    """Flatten parameters to ``{'section.key': value}`` (for MLflow and diffs)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            out[prefix] = node

    walk("", params.model_dump(mode="json"))
    return out
