"""What every section of the parameters shares: the base model, the error, seeds and the fixed shapes rules use."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class Section(BaseModel):
    """One section of the parameters: frozen, no unknown keys, no infinite or NaN number.

    A field's ``description`` is the comment params.yaml shows next to the key (see :mod:`gadms.config.render`);
    ``FLOW`` sections are written on one line, ``{key: value, ...}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    FLOW: ClassVar[bool] = False


class SplitFractions(Section):
    """How a synthetic world's identities are split; the shares sum to 1."""

    FLOW: ClassVar[bool] = True

    train: float = Field(0.7, gt=0.0, lt=1.0)
    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitFractions":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1 (got {total:g})")
        return self
