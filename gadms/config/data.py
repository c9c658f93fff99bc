"""Where things live, the synthetic world, curation and the caption quality gate (SPEC 2-4)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from gadms.config.base import DEVICE_NAME, Section, SplitFractions
from gadms.file_rules import MAX_FILE_BYTES, MAX_IMAGE_PIXELS
from gadms.safe_yaml import shorten


class PathsConfig(Section):
    data_dir: Path = Field(Path("data"), description="curated corpus, tracked by data.dvc")
    work_dir: Path = Field(Path("work"), description="intermediate outputs (shards, reports)")
    checkpoints_dir: Path = Path("checkpoints")
    mlruns_dir: Path = Field(Path("mlruns"), description="MLflow's local store when MLFLOW_TRACKING_URI is unset")
    # or a URL: s3://bucket/shards (see gadms.storage)
    web_dir: Path | str = Field(
        Path("work/web"), description="source web shards (img2dataset WebDataset tars) to curate"
    )
    benchmarks_dir: Path = Field(Path("work/benchmarks"), description="holds CUHK-PEDES/, ICFG-PEDES/, RSTPReid/")
    templates_file: Path = Field(
        Path("work/templates.json"), description="mined caption templates (gadms curate templates)"
    )
    reports_dir: Path = Field(Path("work/reports"), description="curation reports, GX Data Docs, figures")

    @field_validator("web_dir", mode="before")
    @classmethod
    def _url_or_path(cls, value: Any) -> Path | str:
        """A URL stays a string (``Path`` would turn ``s3://b`` into ``s3:/b``); anything else is a path."""
        text = str(value)
        return text if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) else Path(text)


class SynthConfig(Section):
    image_width: int = Field(640, ge=160, le=4096, description="web scene size")
    image_height: int = Field(480, ge=160, le=4096)
    max_people: int = Field(3, ge=0, le=10, description="people per web scene: 0..max_people")
    shard_size: int = Field(100, ge=1, description="samples per WebDataset tar shard")
    jpeg_quality: int = Field(90, ge=1, le=100)
    occlusion_probability: float = Field(0.3, ge=0.0, le=1.0, description="chance of a small occluder per person")
    min_images_per_identity: int = Field(2, ge=1)
    max_images_per_identity: int = Field(4, ge=1)
    captions_per_image: int = Field(2, ge=1, le=10)
    split_fractions: SplitFractions = SplitFractions()
    caption_noise: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of train captions with a wrong attribute phrase"
    )
    caption_noise_words: int = Field(1, ge=1, le=8, description="wrong attribute words in each noisy caption")

    @model_validator(mode="after")
    def _image_range(self) -> "SynthConfig":
        if self.min_images_per_identity > self.max_images_per_identity:
            raise ValueError("min_images_per_identity must be <= max_images_per_identity")
        return self


class SourceConfig(Section):
    format: Literal["auto", "webdataset", "folder", "parquet"] = Field(
        "auto", description="auto | webdataset | folder | parquet"
    )
    folder_shard_size: int = Field(1000, ge=1, description="images per shard when reading a folder of images")
    max_member_bytes: int = Field(
        MAX_FILE_BYTES,
        ge=1,
        description="an image of more bytes (tar member, file, Parquet cell) fails as too_large, unread",
    )
    max_image_pixels: int = Field(
        MAX_IMAGE_PIXELS,
        ge=1,
        description="an image of more width*height pixels fails as too_large before it is decoded",
    )
    max_row_group_bytes: int = Field(
        64 * 2**20,
        ge=1,
        description="a Parquet row group holding more image bytes is not read: its rows are too_large",
    )


class DetectorConfig(Section):
    backend: Literal["precomputed", "yolo"] = Field("precomputed", description="precomputed | yolo")
    detector_weights: Optional[Path] = Field(
        None, description="local path of a YOLO11 detector (.pt), for backend yolo"
    )
    pose_weights: Optional[Path] = Field(None, description="local path of a YOLO11-Pose model (.pt), for backend yolo")
    batch_size: int = Field(8, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        """A device name torch knows; whether this machine has it is checked when the detector starts."""
        if not DEVICE_NAME.fullmatch(value):
            raise ValueError(f"{shorten(value)} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return value


class FilterConfig(Section):
    min_short_side: float = Field(90, ge=0, description="pixels")
    min_aspect: float = Field(0.25, gt=0, description="width / height")
    max_aspect: float = Field(0.5, gt=0)
    min_confidence: float = Field(0.85, ge=0, le=1, description="detection confidence must be above this")
    min_keypoints: int = Field(8, ge=0, le=17, description="visible COCO keypoints")
    min_hip_keypoints: int = Field(1, ge=0, le=2, description="of keypoints 11, 12")
    min_head_keypoints: int = Field(2, ge=0, le=5, description="of keypoints 0-4")
    keypoint_confidence: float = Field(0.5, ge=0, le=1, description="a keypoint is visible above this confidence")

    @model_validator(mode="after")
    def _aspect_range(self) -> "FilterConfig":
        if self.min_aspect > self.max_aspect:
            raise ValueError("min_aspect must be <= max_aspect")
        return self


class CropConfig(Section):
    margin: float = Field(0.1, ge=0, le=1, description="context added on each side, fraction of box size")
    jpeg_quality: int = Field(95, ge=1, le=100)


class TemplatesConfig(Section):
    extractor: Literal["rule", "llm"] = Field("rule", description="rule | llm")
    clusters: int = Field(50, ge=1, description="k of k-means over template embeddings")
    random_members: int = Field(5, ge=0, description="random templates kept per cluster besides the representative")
    diversify: bool = Field(False, description="ask the LLM for new templates from each cluster")
    embedder: Literal["tiny", "ViT-B-16"] = Field(
        "tiny", description="CLIP text encoder for clustering: tiny | ViT-B-16 (paper: ViT-bigG/14)"
    )
    embedder_pretrained: Optional[str] = Field(
        None, description="local open_clip weights for the embedder; null: seeded random init"
    )
    llm_url: str = "http://127.0.0.1:8000/v1"
    llm_model: str = "Qwen/Qwen2.5-72B-Instruct"
    api_key_env: str = Field("GADMS_LLM_API_KEY", description="name of the environment variable holding the key")


class CaptioningConfig(Section):
    backend: Literal["attributes", "vlm"] = Field("attributes", description="attributes | vlm")
    templates_file: Optional[Path] = Field(None, description="mined templates (JSON); null: the built-in templates")
    captions_per_image: int = Field(2, ge=1, le=10)
    max_words: int = Field(60, ge=1)
    vlm_url: str = "http://127.0.0.1:8001/v1"
    vlm_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    api_key_env: str = "GADMS_VLM_API_KEY"
    concurrency: int = Field(16, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")


class CurationConfig(Section):
    source: SourceConfig = SourceConfig()
    detector: DetectorConfig = DetectorConfig()
    filter: FilterConfig = Field(FilterConfig(), description="SPEC 2")
    crop: CropConfig = CropConfig()
    templates: TemplatesConfig = Field(TemplatesConfig(), description="SPEC 3.1-3.2")
    captioning: CaptioningConfig = Field(CaptioningConfig(), description="SPEC 3.3")


class MostlyConfig(Section):
    """Per check: the share of captions (or crops) that must pass it."""

    non_empty: float = Field(1.0, ge=0, le=1)
    valid_text: float = Field(1.0, ge=0, le=1, description="valid UTF-8, printable")
    word_count: float = Field(0.99, ge=0, le=1, description="min_words..max_words")
    no_speculation: float = Field(0.99, ge=0, le=1, description='"possibly", "seems", "appears to be", ...')
    no_background: float = Field(0.99, ge=0, le=1, description="scenery and atmosphere talk")
    mentions_person: float = Field(0.99, ge=0, le=1)
    mentions_attribute: float = Field(0.99, ge=0, le=1, description="at least one garment or colour word")
    no_placeholder: float = Field(1.0, ge=0, le=1, description='no leftover "[colored top]"')
    crop_size: float = Field(1.0, ge=0, le=1, description="crop short side >= min_crop_short_side")
    crop_aspect: float = Field(0.99, ge=0, le=1, description="min_crop_aspect..max_crop_aspect")


class ValidationConfig(Section):
    min_words: int = Field(5, ge=0)
    max_words: int = Field(80, ge=1)
    max_duplicate_rate: float = Field(0.02, ge=0.0, le=1.0, description="share of exact duplicate captions allowed")
    mostly: MostlyConfig = Field(MostlyConfig(), description="per check: share of captions (crops) that must pass it")
    min_crop_short_side: float = Field(90, ge=0)
    min_crop_aspect: float = Field(
        0.2, gt=0, description="crops include the context margin, so bounds are looser than the box's"
    )
    max_crop_aspect: float = Field(0.7, gt=0)
    # the gate's memory follows it, not the corpus; not a threshold (whole samples per batch)
    batch_captions: int = Field(
        20000, ge=1, description="captions validated per batch: memory follows it, not the corpus size"
    )

    @model_validator(mode="after")
    def _bounds(self) -> "ValidationConfig":
        if self.min_words > self.max_words:
            raise ValueError("min_words must be <= max_words")
        if self.min_crop_aspect > self.max_crop_aspect:
            raise ValueError("min_crop_aspect must be <= max_crop_aspect")
        return self
