"""Training losses (SPEC 5.3): SDM, masked-token prediction, ITC, identity, TIC.

Features passed in are raw projections; each loss normalises what it needs.
``identities`` is a ``(B,)`` long tensor; pairs with equal ids are true matches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _match_distribution(identities: torch.Tensor) -> torch.Tensor:
    """q_ij: 1 for same identity, normalised per row."""
    same = (identities[:, None] == identities[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def sdm_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    identities: torch.Tensor,
    temperature: float,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Similarity distribution matching: KL(p || q) image-to-text plus text-to-image.

    p_ij = softmax_j(cos(v_i, t_j) / tau); q_ij is the true-match distribution.
    """
    v = F.normalize(image_features, dim=-1)
    t = F.normalize(text_features, dim=-1)
    logits = v @ t.T / temperature
    q = _match_distribution(identities)
    log_q = torch.log(q + eps)

    def kl(rows: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(rows, dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()

    return kl(logits) + kl(logits.T)


def itc_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, pair i matching pair i."""
    v = F.normalize(image_features, dim=-1)
    t = F.normalize(text_features, dim=-1)
    logits = v @ t.T / temperature
    target = torch.arange(len(v), device=v.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def mtp_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the masked positions only: ``logits`` ``(M, V)``, ``targets`` ``(M,)``."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets)


def id_loss(image_logits: torch.Tensor, text_logits: torch.Tensor, identities: torch.Tensor) -> torch.Tensor:
    """Identity classification of both modalities with a shared classifier."""
    return (F.cross_entropy(image_logits, identities) + F.cross_entropy(text_logits, identities)) / 2


def tic_loss(
    text_features: torch.Tensor,
    partner_features: torch.Tensor,
    identities: torch.Tensor,
    temperature: float,
    hard_negatives: int,
    same_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Textual intra-modal contrastive loss (after FG-CLIP 2).

    Each caption must be closer to the other caption of its own image than to
    the ``hard_negatives`` most similar captions of other identities. Captions
    of the anchor's own image are never negatives (with ``train.identity:
    caption`` each caption is its own identity, and the other caption of the
    image, in the batch as a row of its own, would otherwise hold the loss
    above log 3 for perfect features).

    Args:
        text_features: ``(B, E)`` first captions.
        partner_features: ``(B, E)`` second captions of the same images.
        identities: ``(B,)``.
        temperature: softmax temperature.
        hard_negatives: negatives kept per anchor (the most similar ones).
        same_image: ``(B, B)`` bool, pairs whose captions come from one image (see :func:`same_image_pairs`);
            None: identities alone decide.
    """
    feats = F.normalize(torch.cat([text_features, partner_features]), dim=-1)
    ids = torch.cat([identities, identities])
    n = len(feats)
    sim = feats @ feats.T / temperature
    partner = (torch.arange(n, device=feats.device) + n // 2) % n
    positive = sim[torch.arange(n), partner]
    is_negative = ids[:, None] != ids[None, :]
    if same_image is not None:  # rows k and k + B are one pair: the (B, B) relation tiles 2 x 2
        is_negative &= ~same_image.repeat(2, 2)
    has_negative = is_negative.any(dim=1)
    if not has_negative.any():
        return sim.sum() * 0.0
    k = max(1, min(hard_negatives, int(is_negative.sum(dim=1).max())))
    negatives = sim.masked_fill(~is_negative, float("-inf")).topk(k, dim=1).values
    logits = torch.cat([positive[:, None], negatives], dim=1)[has_negative]
    target = torch.zeros(len(logits), dtype=torch.long, device=feats.device)
    return F.cross_entropy(logits, target)


def same_image_pairs(tokens: torch.Tensor, partner_tokens: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` bool: pairs whose captions come from one image, found by their token ids.

    Pairs ``i`` and ``j`` are linked when one's caption or TIC partner is the
    other's caption or partner; links are closed transitively (an image with
    more than two captions chains its partners). Identical captions of
    different images are linked too: a copy of the anchor cannot be told apart.

    Args:
        tokens: ``(B, N)`` the pairs' captions.
        partner_tokens: ``(B, N)`` their partners (the next caption of the same image).
    """
    b = len(tokens)
    ids = torch.unique(torch.cat([tokens, partner_tokens]), dim=0, return_inverse=True)[1]
    own = torch.stack([ids[:b], ids[b:]], dim=1)  # (B, 2): each pair's two caption ids
    link = (own[:, None, :, None] == own[None, :, None, :]).flatten(2).any(dim=2)
    while True:  # transitive closure: at most log2(B) squarings
        wider = (link.float() @ link.float()) > 0
        if torch.equal(wider, link):
            return link
        link = wider
