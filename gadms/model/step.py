"""One training step: GA-DMS (pre-training), IRRA-style (fine-tuning) or plain SDM.

GA-DMS: the image is encoded once; token scores are computed on the original
caption (GASS or a baseline score); SDM aligns the image with the
noise-masked caption; masked-token prediction reconstructs the
informative-masked caption through the interaction encoder.
Total = w_sdm * SDM + beta * MTP (+ the optional ITC, ID and TIC terms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Callable, Literal

import torch

from gadms.config import LossConfig, ModelConfig
from gadms.model import losses
from gadms.model.gass import GassScorer, cosine_token_scores, random_token_scores, valid_token_mask
from gadms.model.masking import apply_mask, informative_mask_probability, noise_mask_probability, sample_mask
from gadms.model.retrieval import PersonRetrievalModel
from gadms.model.text_tower import encode_text

Mode = Literal["gadms", "irra", "sdm"]


@dataclass
class StepOutput:
    """Loss terms (named ``*_loss``), their weighted total, and what drove the masks."""

    losses: dict[str, torch.Tensor]
    total: torch.Tensor
    scores: torch.Tensor | None = None  # (B, N) token scores in [0, 1], for logging
    noise_mask: torch.Tensor | None = None
    informative_mask: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)


class TrainingStep:
    """Computes the losses of one batch; call ``.total.backward()`` on the result.

    Args:
        model_cfg: masking score, alphas, slope, midpoint, GASS layers and scales.
        loss_cfg: which loss terms are on and their weights, temperature.
        mode: ``gadms`` (dual masking), ``irra`` (SDM + random-masked MLM) or ``sdm``.
        mlm_probability: masking rate of the ``irra`` mode.
        seed: seeds the generator every mask is drawn from.
    """

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig, mode: Mode = "gadms", mlm_probability: float = 0.15, seed: int = 0):
        self.model_cfg = model_cfg
        self.loss_cfg = loss_cfg
        self.mode = mode
        self.mlm_probability = mlm_probability
        self.generator = torch.Generator().manual_seed(seed % (1 << 64))  # seed + rank may pass 2**64
        self.gass = GassScorer(model_cfg.gass.layers, model_cfg.gass.scales)
        self.last_scoring_s = 0.0  # time of the last token-scoring pass (for benchmarks)
        self.gass_one_pass = True  # False: one backward per layer (reference, for benchmarks)
        # Under DDP: gather features (with gradients) and identities across ranks so
        # SDM/ITC see the global batch. None = single process.
        self.gather: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.gather_ids: Callable[[torch.Tensor], torch.Tensor] | None = None

    def token_scores(self, model: PersonRetrievalModel, tokens: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor | None:
        """Scores of the configured kind, or None for ``none``."""
        kind = self.model_cfg.masking.score
        if kind == "gass":
            return self.gass(model.clip, tokens, image_features, one_pass=self.gass_one_pass)
        if kind == "cosine":
            return cosine_token_scores(model.clip, tokens, image_features)
        if kind == "random":
            return random_token_scores(tokens, self.generator)
        return None

    def _masks(self, model, tokens, image_features) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        none = torch.zeros_like(tokens, dtype=torch.bool)
        if self.mode == "sdm":
            return None, none, none
        if self.mode == "irra":
            p = torch.full(tokens.shape, self.mlm_probability, device=tokens.device)
            return None, none, sample_mask(p, tokens, self.generator)
        started = time.perf_counter()
        scores = self.token_scores(model, tokens, image_features)
        self.last_scoring_s = time.perf_counter() - started
        if scores is None:
            return None, none, none
        m = self.model_cfg.masking
        noise = sample_mask(noise_mask_probability(scores, m.alpha_noise, m.slope, m.midpoint), tokens, self.generator)
        informative = sample_mask(informative_mask_probability(scores, m.alpha_informative, m.slope, m.midpoint), tokens, self.generator)
        return scores, noise, informative

    def __call__(
        self,
        model: PersonRetrievalModel,
        images: torch.Tensor,
        tokens: torch.Tensor,
        identities: torch.Tensor | None = None,
        partner_tokens: torch.Tensor | None = None,
    ) -> StepOutput:
        """Losses for a batch of ``(B, 3, H, W)`` images and ``(B, N)`` caption tokens.

        ``identities`` defaults to each pair being its own identity;
        ``partner_tokens`` (a second caption per image) feeds the TIC term.
        """
        cfg = self.loss_cfg
        if identities is None:
            identities = torch.arange(len(tokens), device=tokens.device)
        image_features, image_tokens = model.encode_image(images)
        self.last_scoring_s = 0.0
        scores, noise_mask, informative_mask = self._masks(model, tokens, image_features)

        out: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        text_features = model.encode_text(apply_mask(tokens, noise_mask))
        all_image, all_text, all_ids = image_features, text_features, identities
        if self.gather is not None and self.gather_ids is not None:
            all_image, all_text, all_ids = self.gather(image_features), self.gather(text_features), self.gather_ids(identities)
        if cfg.sdm.enabled:
            out["sdm_loss"], weights["sdm_loss"] = losses.sdm_loss(all_image, all_text, all_ids, cfg.temperature), cfg.sdm.weight
        if cfg.itc.enabled:
            out["itc_loss"], weights["itc_loss"] = losses.itc_loss(all_image, all_text, cfg.temperature), cfg.itc.weight
        if cfg.mtp.enabled and informative_mask.any():
            states = encode_text(model.clip, apply_mask(tokens, informative_mask)).tokens
            logits = model.interaction.predict(model.interaction(states, image_tokens), informative_mask)
            out["mtp_loss"], weights["mtp_loss"] = losses.mtp_loss(logits, tokens[informative_mask]), cfg.mtp.weight
        if cfg.id.enabled and model.classifier is not None:
            out["id_loss"] = losses.id_loss(model.classifier(image_features), model.classifier(text_features), identities)
            weights["id_loss"] = cfg.id.weight
        if cfg.tic.enabled and partner_tokens is not None:
            partner = model.encode_text(partner_tokens)
            out["tic_loss"] = losses.tic_loss(text_features, partner, identities, cfg.temperature, cfg.tic.hard_negatives)
            weights["tic_loss"] = cfg.tic.weight
        if not out:
            raise ValueError("loss: every loss term is disabled; enable at least one of sdm, itc, mtp, id, tic")
        total: torch.Tensor = sum(weights[name] * value for name, value in out.items())  # type: ignore[assignment]
        return StepOutput(out, total, scores, noise_mask, informative_mask, {"scoring_s": self.last_scoring_s})


def count_valid(tokens: torch.Tensor) -> int:
    """Number of maskable tokens in a batch (for logging masking rates)."""
    return int(valid_token_mask(tokens).sum())
