"""``gadms ablate``: the testbed of the paper's Table 4 (rows x seeds, corpora, the base stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from gadms.config.base import Section, Seed, SplitFractions

AblationRow = Literal["none", "random", "cosine", "gass", "gass-official", "gass-no-mtp", "random-no-mtp", "clean"]


class AblateCorpusConfig(Section):
    """A synthetic benchmark of the ablation testbed (``gadms synth benchmark`` with these values)."""

    identities: int = Field(200, ge=3)
    seed: Seed = 1
    caption_noise: float = Field(0.3, ge=0, le=1)  # share of train captions with wrong attribute words
    caption_noise_words: int = Field(1, ge=1, le=8)  # wrong words per noisy caption
    split_fractions: SplitFractions = SplitFractions()
    vocabulary: Literal["full", "checkable"] = Field(
        "full",
        description="full | checkable (top, bottom, shoe, bag colours only; short captions)",
    )
    gallery: Literal["random", "one-slot"] = Field(
        "random",
        description="random | one-slot (checkable: families of 5, one colour apart)",
    )

    @model_validator(mode="after")
    def _one_slot_needs_checkable(self) -> "AblateCorpusConfig":
        if self.gallery == "one-slot" and self.vocabulary != "checkable":
            raise ValueError("gallery one-slot needs vocabulary checkable (the families differ in one colour slot)")
        return self


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
    hard_negatives: bool = Field(
        False,
        description="true (checkable): one-slot-swapped captions as in-batch negatives",
    )


class AblateCeilingConfig(Section):
    """``gadms ablate ceiling``: can occlusion on the base find the wrong words? Rows compare only when it can."""

    captions: int = Field(400, ge=10, description="held-out test captions checked (fresh noise on each)")
    min_auroc: float = Field(0.85, ge=0, le=1, description="occlusion's pooled same-slot AUROC must reach this")
    min_lowering: float = Field(
        0.9, ge=0, le=1, description="every slot: share of one-slot swaps that lower the similarity"
    )


class AblateConfig(Section):
    """``gadms ablate``: the paper's Table 4 rows x seeds on a noisy corpus, evaluated on unseen identities."""

    rows: tuple[AblationRow, ...] = Field(
        ("none", "random", "cosine", "gass", "gass-official", "gass-no-mtp"),
        min_length=1,
        description="also: random-no-mtp, clean (upper bound)",
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
    ceiling: AblateCeilingConfig = Field(AblateCeilingConfig(), description="the check that the base sees the words")
    noise_mask_rate: Optional[float] = Field(
        None,
        gt=0,
        lt=1,
        description="null | each row's noise midpoint set so its mean noise-mask probability is this",
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
        if self.base.hard_negatives and self.base.corpus.vocabulary != "checkable":
            raise ValueError("base.hard_negatives needs base.corpus.vocabulary: checkable")
        if self.noise_mask_rate is not None and self.corpus.vocabulary != "checkable":
            raise ValueError("noise_mask_rate calibrates on known wrong words: needs corpus.vocabulary: checkable")
        return self
