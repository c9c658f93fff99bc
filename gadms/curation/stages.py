"""What a curation run builds once per process and draws per person: models, templates, seeds and keys.

:class:`CurationStages` holds the detector, the caption templates and the captioner, shared by the shards a
process curates (:func:`stages_for` caches them per parameters); :func:`sample_seed`, :func:`choose_templates`
and :func:`curated_key` make what is drawn and named for each person a function of the seed and the input only.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any, Sequence

import numpy as np

from gadms.config import Params
from gadms.curation.detect import Detector, build_detector
from gadms.curation.output import CurationError
from gadms.curation.records import PersonDetection, SourceRecord, Template
from gadms.reproducible_writes import json_bytes

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_KEY_BASE_CHARS = 48  # readable part of a curated key; the hash after it keeps keys unique (tar names stay short)


class CurationStages:
    """The models and templates a curation run needs, built once and shared by the shards of a process."""

    def __init__(self, params: Params):
        self.params = params
        self.detector: Detector = build_detector(params.curation.detector)
        self.templates = _load_templates(params)
        self.captioner = build_captioner(params)
        self._lock = threading.Lock()  # models are not guaranteed to be thread-safe

    def detect(self, images: Sequence[np.ndarray], records: Sequence[SourceRecord]) -> list[list[PersonDetection]]:
        """Detections per image, one batch at a time."""
        with self._lock:
            return self.detector.detect(images, records)

    def fingerprint(self) -> str:
        """Hash of everything besides the input that decides the output bytes."""
        curation = self.params.curation.model_dump(mode="json")
        for key in ("batch_size", "device"):  # how inference runs, not what it finds
            curation["detector"].pop(key)
        curation["captioning"].pop("concurrency")
        templates = [[t.id, t.text] for t in self.templates]
        return hashlib.sha256(
            json_bytes({"seed": self.params.seed, "curation": curation, "templates": templates})
        ).hexdigest()


def build_captioner(params: Params) -> Any:
    """The captioner named by ``curation.captioning.backend`` (``attributes`` offline, ``vlm`` over HTTP)."""
    cfg = params.curation.captioning
    if cfg.backend == "vlm":
        from gadms.curation.vlm import VlmCaptioner

        return VlmCaptioner(cfg)
    from gadms.curation.attribute_captions import AttributeCaptioner

    return AttributeCaptioner(cfg)


def captioner_name(params: Params) -> str:
    """What wrote the captions, stored with each sample."""
    cfg = params.curation.captioning
    return f"vlm:{cfg.vlm_model}" if cfg.backend == "vlm" else "attributes"


def _load_templates(params: Params) -> list[Template]:
    from gadms.curation.templates import default_templates, load_templates

    path = params.curation.captioning.templates_file
    templates = load_templates(path) if path is not None else default_templates()
    if not templates:
        raise CurationError(f"no caption templates in {path or 'the built-in templates'}")
    return templates


_STAGES: dict[str, CurationStages] = {}
_STAGES_LOCK = threading.Lock()


def stages_for(params: Params) -> CurationStages:
    """The (cached, per process) :class:`CurationStages` of ``params``."""
    key = hashlib.sha256(json_bytes(params.model_dump(mode="json"))).hexdigest()
    with _STAGES_LOCK:
        if key not in _STAGES:
            _STAGES[key] = CurationStages(params)
        return _STAGES[key]


def sample_seed(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the run seed and the given identifiers."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def choose_templates(templates: Sequence[Template], count: int, rng: np.random.Generator) -> tuple[Template, ...]:
    """``count`` distinct templates (repeats only when there are fewer templates than captions)."""
    picks = rng.choice(len(templates), size=count, replace=len(templates) < count)
    return tuple(templates[int(i)] for i in picks)


def curated_key(shard: str, source_key: str, person_index: int, used: set[str]) -> str:
    """A WebDataset-safe key for one person crop, unique in the corpus and the same on every run.

    ``BASE_HASH_INDEX``: the source key with unsafe characters replaced (cut to
    48 characters, for reading), 16 hex digits of SHA-256 of the exact shard name
    and source key (so ``a b`` and ``a+b`` differ), and the person's index. No dots
    or slashes; at most about 70 characters, whatever the source key.

    Args:
        shard: the source shard's name.
        source_key: the sample's key in its source shard.
        person_index: the person's index among the sample's detections.
        used: keys already given in this shard (a clash of the hash, never seen in practice, gets a suffix).

    Returns:
        The key.
    """
    base = _KEY_UNSAFE.sub("_", source_key).strip("_")[:_KEY_BASE_CHARS].strip("_") or "sample"
    digest = hashlib.sha256(f"{shard}/{source_key}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    key, n = f"{base}_{digest}_{person_index}", 1
    while key in used:
        key, n = f"{base}_{digest}_{person_index}_{n}", n + 1
    used.add(key)
    return key
