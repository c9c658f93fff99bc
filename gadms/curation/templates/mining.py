"""Mining: extract, embed, cluster and select a template set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

from gadms.config import TemplatesConfig
from gadms.curation.records import Template
from gadms.curation.templates.clustering import (
    TemplateCluster,
    cluster_templates,
    embed_templates,
    unique_in_order,
)
from gadms.curation.templates.llm import (
    LLM_CONCURRENCY,
    diversification_messages,
    extract_templates_llm,
    parse_diversified,
)
from gadms.curation.templates.rules import extract_template_rule
from gadms.problems import DataError

if TYPE_CHECKING:  # chat pulls in httpx; only the llm paths need it at run time
    from gadms.curation.chat import ChatClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MinedTemplate:
    """One template of a :class:`TemplateSet`.

    Attributes:
        id: position in the set, 0..n-1.
        text: the template.
        cluster: index of its cluster.
        representative: whether it is its cluster's centroid-nearest template.
        origin: ``"extracted"`` (from a caption) or ``"diversified"`` (written by the LLM).
    """

    id: int
    text: str
    cluster: int
    representative: bool
    origin: str = "extracted"


@dataclass(frozen=True)
class TemplateSet:
    """Mined templates and how they were made (the content of a templates file).

    Attributes:
        templates: the templates, ids 0..n-1, cluster by cluster.
        extractor: ``rule`` or ``llm``.
        clusters_requested: k asked for.
        clusters: clusters found (k capped by the distinct templates).
        random_members: random members kept per cluster.
        seed: the seed of embedding, k-means and sampling.
        embedder: the CLIP text tower used.
        embedder_pretrained: its weights (None: seeded random init).
        diversified: whether the LLM added templates.
        source: a description of the captions mined.
        sentences: captions read.
        extracted: captions that gave a template.
        unique: distinct templates clustered.
    """

    templates: tuple[MinedTemplate, ...]
    extractor: str
    clusters_requested: int
    clusters: int
    random_members: int
    seed: int
    embedder: str
    embedder_pretrained: Optional[str]
    diversified: bool
    source: str
    sentences: int
    extracted: int
    unique: int

    def as_templates(self) -> list[Template]:
        """The templates as :class:`Template` records (what captioners take)."""
        return [Template(t.id, t.text) for t in self.templates]


def _extract(
    sentences: list[str], cfg: TemplatesConfig, seed: int, client: "ChatClient | None", progress: bool
) -> list[str | None]:
    """Templates of ``sentences`` by the configured extractor."""
    if cfg.extractor == "llm":
        return extract_templates_llm(sentences, _client(cfg, client), seed)
    if progress:
        from tqdm import tqdm

        sentences = tqdm(sentences, desc="templates", unit="caption")
    return [extract_template_rule(s) for s in sentences]


def _client(cfg: TemplatesConfig, client: "ChatClient | None") -> "ChatClient":
    """The given client, or one for ``cfg.llm_url``."""
    if client is not None:
        return client
    from gadms.curation.chat import ChatClient

    return ChatClient(cfg.llm_url, cfg.llm_model, api_key_env=cfg.api_key_env)


def _diversify(clusters: list[TemplateCluster], client: "ChatClient", seed: int, existing: set[str]) -> list[list[str]]:
    """New valid templates per cluster from the LLM, none repeating ``existing`` or each other."""
    from gadms.curation.chat import ChatCall, ChatError

    calls = []
    for cluster in clusters:
        examples = [cluster.representative, *cluster.members]
        calls.append(
            ChatCall(
                diversification_messages(examples, len(examples)),
                max_tokens=96 * len(examples),
                temperature=0.0,
                seed=seed,
            )
        )
    answers = client.complete_many(calls, LLM_CONCURRENCY)
    seen = set(existing)
    out = []
    for answer in answers:
        fresh = [] if isinstance(answer, ChatError) else [t for t in parse_diversified(answer) if t not in seen]
        seen.update(fresh)
        out.append(fresh)
    return out


def _entries(clusters: list[TemplateCluster], added: list[list[str]]) -> tuple[MinedTemplate, ...]:
    """Number templates 0..n-1, cluster by cluster: representative, random members, LLM additions."""
    rows: list[tuple[str, int, bool, str]] = []
    for cluster, extra in zip(clusters, added):
        rows.append((cluster.representative, cluster.index, True, "extracted"))
        rows += [(text, cluster.index, False, "extracted") for text in cluster.members]
        rows += [(text, cluster.index, False, "diversified") for text in extra]
    return tuple(MinedTemplate(i, text, cluster, rep, origin) for i, (text, cluster, rep, origin) in enumerate(rows))


def mine_templates(
    sentences: Iterable[str],
    cfg: TemplatesConfig,
    seed: int,
    client: "ChatClient | None" = None,
    progress: bool = False,
    source: str = "captions",
) -> TemplateSet:
    """Extract, embed, cluster and select caption templates (SPEC 3.1-3.2).

    Args:
        sentences: the captions to mine.
        cfg: extractor, k, random members, diversification, embedder.
        seed: seeds the embedder's random init, k-means and member sampling.
        client: the LLM client for ``extractor: llm`` or ``diversify``; made
            from ``cfg.llm_url`` when None and needed.
        progress: show a progress bar while extracting.
        source: a description of the captions, recorded in the file.

    Returns:
        The selected templates with how they were made.

    Raises:
        DataError: no caption gave a template.
    """
    sentences = list(sentences)
    extracted = [t for t in _extract(sentences, cfg, seed, client, progress) if t is not None]
    if not extracted:
        raise DataError(f"{source}: none of {len(sentences)} captions gave a template (extractor {cfg.extractor})")
    unique = unique_in_order(extracted)
    logger.info("templates: %d captions -> %d templates, %d distinct", len(sentences), len(extracted), len(unique))
    clusters = cluster_templates(unique, embed_templates(unique, cfg, seed), cfg.clusters, cfg.random_members, seed)
    added: list[list[str]] = [[] for _ in clusters]
    if cfg.diversify:
        added = _diversify(clusters, _client(cfg, client), seed, set(unique))
    return TemplateSet(
        templates=_entries(clusters, added),
        extractor=cfg.extractor,
        clusters_requested=cfg.clusters,
        clusters=len(clusters),
        random_members=cfg.random_members,
        seed=seed,
        embedder=cfg.embedder,
        embedder_pretrained=cfg.embedder_pretrained,
        diversified=cfg.diversify,
        source=source,
        sentences=len(sentences),
        extracted=len(extracted),
        unique=len(unique),
    )
