"""The synthetic corpora of the ablation testbed, each built once and reused while its settings stay the same."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gadms.config import AblateCorpusConfig, SynthConfig
from gadms.reproducible_writes import write_bytes_atomic
from gadms.synth.benchmark import write_benchmark
from gadms.synth.checkable import WORLD_VERSION

DONE = "testbed.json"


@dataclass(frozen=True)
class Corpus:
    """A built corpus: its benchmark root (holding ``CUHK-PEDES/``) and the digest of what built it."""

    root: Path
    key: str


def corpus_synth(cfg: AblateCorpusConfig, synth: SynthConfig) -> SynthConfig:
    """``synth`` with the corpus's noise and split fractions."""
    update = {
        "caption_noise": cfg.caption_noise,
        "caption_noise_words": cfg.caption_noise_words,
        "split_fractions": cfg.split_fractions,
    }
    return SynthConfig.model_validate({**synth.model_dump(), **update})


def build_corpus(name: str, cfg: AblateCorpusConfig, synth: SynthConfig, parent: Path) -> Corpus:
    """The CUHK-PEDES-format synthetic benchmark ``parent/NAME-<digest>``, written unless already there.

    Args:
        name: ``corpus``, ``held-out`` or ``base``.
        cfg: identities, seed, noise and splits.
        synth: the synthetic world's other settings (image sizes, images per identity, ...).
        parent: the folder the corpora live in.

    Returns:
        The corpus (same settings -> same folder, same bytes).
    """
    from gadms.ablate.rows import digest

    full = corpus_synth(cfg, synth)
    inputs = {"identities": cfg.identities, "seed": cfg.seed, "synth": full.model_dump(mode="json")}
    if cfg.vocabulary != "full":  # the full world's corpora keep the keys they had before the field existed
        inputs["vocabulary"] = f"{cfg.vocabulary}-v{WORLD_VERSION}"
    if cfg.gallery != "random":
        inputs["gallery"] = cfg.gallery
    key = digest(inputs)
    root = Path(parent) / f"{name}-{key[:12]}"
    if not (root / DONE).is_file():
        summary = write_benchmark(
            root, cfg.identities, cfg.seed, full, progress=False, vocabulary=cfg.vocabulary, gallery=cfg.gallery
        )
        info = {"identities": summary.identities, "images": summary.images, "captions": summary.captions}
        write_bytes_atomic(root / DONE, json.dumps({"key": key, **info}, indent=1).encode("utf-8"))
    return Corpus(root, key)
