"""``gadms ablate``: the testbed of the paper's Table 4 (rows x seeds, corpora, the base stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gadms.config.base import Section, Seed, SplitFractions

AblationRow = Literal["none", "random", "cosine", "gass", "gass-official", "gass-no-mtp", "random-no-mtp"]


class AblateCorpusConfig(Section):
    """A synthetic benchmark of the ablation testbed (``gadms synth benchmark`` with these values)."""

    identities: int = Field(200, ge=3)
    seed: Seed = 1
    caption_noise: float = Field(0.3, ge=0, le=1)  # share of train captions with wrong attribute words
    caption_noise_words: int = Field(1, ge=1, le=8)  # wrong words per noisy caption
    split_fractions: SplitFractions = SplitFractions()


class AblateBaseConfig(Section):
    """The base stage: the tiny model pre-trained on clean captions, a stand-in for public CLIP weights."""

    # false, or model.pretrained set: the rows start from model.pretrained / from scratch
    enabled: bool = Field(True, description="used when model.pretrained is null")
    corpus: AblateCorpusConfig = AblateCorpusConfig(
        identities=400, seed=3, caption_noise=0.0, split_fractions=SplitFractions(train=0.9, val=0.05, test=0.05)
    )
    epochs: int = Field(10, ge=1)
    lr: float = Field(5e-4, gt=0)
    cache_dir: Path = Field(Path("work/ablate-base"), description="base-<hash of its inputs>/clip.safetensors")


class AblateConfig(Section):
    """``gadms ablate``: the paper's Table 4 rows x seeds on a noisy corpus, evaluated on unseen identities."""

    rows: tuple[AblationRow, ...] = Field(
        ("none", "random", "cosine", "gass", "gass-official", "gass-no-mtp"),
        min_length=1,
        description="also: random-no-mtp",
    )
    seeds: tuple[Seed, ...] = Field((0, 1, 2), min_length=1)
    corpus: AblateCorpusConfig = Field(
        AblateCorpusConfig(), description="the noisy GA-DMS corpus (synthetic; its train split is used)"
    )
    held_out: AblateCorpusConfig = Field(
        AblateCorpusConfig(
            identities=200, seed=2, caption_noise=0.0, split_fractions=SplitFractions(train=0.05, val=0.05, test=0.9)
        ),
        description="evaluated on its test split: identities no stage trained on",
    )
    base: AblateBaseConfig = Field(
        AblateBaseConfig(),
        description="stand-in for public CLIP weights: clean captions, SDM + ITC, no masking, no MTP",
    )
    out_dir: Path = Field(
        Path("work/ablate"),
        description="data/, runs/, results/<row>-seed<s>.json, results.{csv,md,txt}, ablation.png",
    )

    @model_validator(mode="after")
    def _distinct(self) -> "AblateConfig":
        if len(set(self.rows)) != len(self.rows) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("rows and seeds must not repeat")
        if len({self.corpus.seed, self.held_out.seed, self.base.corpus.seed}) < 3:
            raise ValueError("corpus, held_out and base.corpus need different seeds (different identities)")
        return self
