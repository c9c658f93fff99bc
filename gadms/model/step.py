"""One training step: GA-DMS (pre-training), IRRA-style (fine-tuning) or plain SDM.

GA-DMS: the image is encoded once; token scores are computed on the original
caption (GASS or a baseline score); SDM aligns the image with the
noise-masked caption; masked-token prediction reconstructs the
informative-masked caption through the interaction encoder.
Total = w_sdm * SDM + beta * MTP (+ the optional ITC, ID and TIC terms).

The official code's choices are switches of ``model.masking``: scores from the
previous epoch (``score_timing``), BERT-style replacement (``replacement``) and
at least one masked token per caption, in the MTP caption (``mtp_at_least_one``)
and in the noise-masked caption (``noise_at_least_one``; the released code
builds both captions with the same function).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from gadms.config import LossConfig, ModelConfig
from gadms.model import losses
from gadms.model.gass import GassScorer, cosine_token_scores, random_token_scores, valid_token_mask
from gadms.model.masking import (
    ensure_one_masked,
    informative_mask_probability,
    noise_mask_probability,
    replace_tokens,
    sample_mask,
)
from gadms.model.retrieval import PersonRetrievalModel
from gadms.model.score_memory import ScoreMemory
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
        model_cfg: masking score, alphas, slope, midpoints, timing and replacement, GASS layers, scales and variant.
        loss_cfg: which loss terms are on and their weights, temperature.
        mode: ``gadms`` (dual masking), ``irra`` (SDM + random-masked MLM) or ``sdm``.
        mlm_probability: masking rate of the ``irra`` mode.
        seed: seeds the generator every mask is drawn from.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        mode: Mode = "gadms",
        mlm_probability: float = 0.15,
        seed: int = 0,
    ):
        self.model_cfg = model_cfg
        self.loss_cfg = loss_cfg
        self.mode = mode
        self.mlm_probability = mlm_probability
        self.generator = torch.Generator().manual_seed(seed % (1 << 64))  # seed + rank may pass 2**64
        self.gass = GassScorer(model_cfg.gass.layers, model_cfg.gass.scales, model_cfg.gass.variant)
        # used when score_timing is previous_epoch; rows as long as the context
        self.memory = ScoreMemory(model_cfg.masking.initial_score, model_cfg.context_length)
        self.last_scoring_s = 0.0  # time of the last token-scoring pass (for benchmarks)
        self.gass_one_pass = True  # False: one backward per layer (reference, for benchmarks)
        # Under DDP: gather features (with gradients) and identities across ranks so
        # SDM/ITC see the global batch. None = single process.
        self.gather: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.gather_ids: Callable[[torch.Tensor], torch.Tensor] | None = None

    def token_scores(
        self, model: PersonRetrievalModel, tokens: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor | None:
        """Scores of the configured kind, or None for ``none``."""
        kind = self.model_cfg.masking.score
        if kind == "gass":
            return self.gass(model.clip, tokens, image_features, one_pass=self.gass_one_pass)
        if kind == "cosine":
            return cosine_token_scores(model.clip, tokens, image_features)
        if kind == "random":
            return random_token_scores(tokens, self.generator)
        return None

    def _timed_scores(self, model, tokens, image_features, indices: torch.Tensor | None) -> torch.Tensor | None:
        """This step's scores, or (``previous_epoch``) the stored ones while this step's are kept for later."""
        started = time.perf_counter()
        scores = self.token_scores(model, tokens, image_features)
        self.last_scoring_s = time.perf_counter() - started
        if scores is None or self.model_cfg.masking.score_timing == "fresh":
            return scores
        if indices is None:
            raise ValueError("model.masking.score_timing previous_epoch: the step needs each caption's dataset index")
        keys, kept = indices, scores
        if self.gather_ids is not None:  # every rank remembers every caption's scores
            keys, kept = self.gather_ids(indices), self.gather_ids(scores)
        used = self.memory.lookup(indices, tokens)
        self.memory.store(keys, kept)
        return used

    def _masks(self, model, tokens, image_features, indices=None) -> tuple[Tensor | None, Tensor, Tensor]:
        """Scores, noise mask and informative mask of the step's mode."""
        none = torch.zeros_like(tokens, dtype=torch.bool)
        m = self.model_cfg.masking
        if self.mode == "sdm":
            return None, none, none
        if self.mode == "irra":
            p = torch.full(tokens.shape, self.mlm_probability, device=tokens.device)
            mlm = sample_mask(p, tokens, self.generator)
            return None, none, ensure_one_masked(mlm, tokens) if m.mtp_at_least_one else mlm
        scores = self._timed_scores(model, tokens, image_features, indices)
        if scores is None:
            return None, none, none
        p_noise = noise_mask_probability(scores, m.alpha_noise, m.slope, m.noise_midpoint)
        noise = sample_mask(p_noise, tokens, self.generator)
        if m.noise_at_least_one:
            noise = ensure_one_masked(noise, tokens)
        p_informative = informative_mask_probability(scores, m.alpha_informative, m.slope, m.informative_midpoint)
        informative = sample_mask(p_informative, tokens, self.generator)
        if m.mtp_at_least_one:
            informative = ensure_one_masked(informative, tokens)
        return scores, noise, informative

    def __call__(
        self,
        model: PersonRetrievalModel,
        images: torch.Tensor,
        tokens: torch.Tensor,
        identities: torch.Tensor | None = None,
        partner_tokens: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> StepOutput:
        """Losses for a batch of ``(B, 3, H, W)`` images and ``(B, N)`` caption tokens.

        ``identities`` defaults to each pair being its own identity;
        ``partner_tokens`` (a second caption of each image; a row equal to its
        caption means none) feeds the TIC term; ``indices`` (each caption's
        dataset index) and ``epoch`` serve the ``previous_epoch`` score timing.
        """
        cfg = self.loss_cfg
        rule = self.model_cfg.masking.replacement
        if identities is None:
            identities = torch.arange(len(tokens), device=tokens.device)
        self.memory.start_epoch(epoch)
        image_features, image_tokens = model.encode_image(images)
        self.last_scoring_s = 0.0
        scores, noise_mask, informative_mask = self._masks(model, tokens, image_features, indices)

        out: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        noise_masked = replace_tokens(tokens, noise_mask, rule, self.generator) if noise_mask.any() else tokens
        text_features = model.encode_text(noise_masked)
        all_image, all_text, all_ids = image_features, text_features, identities
        if self.gather is not None and self.gather_ids is not None:
            all_image, all_text, all_ids = (
                self.gather(image_features),
                self.gather(text_features),
                self.gather_ids(identities),
            )
        if cfg.sdm.enabled:
            out["sdm_loss"], weights["sdm_loss"] = (
                losses.sdm_loss(all_image, all_text, all_ids, cfg.temperature),
                cfg.sdm.weight,
            )
        if cfg.itc.enabled:
            out["itc_loss"], weights["itc_loss"] = losses.itc_loss(all_image, all_text, cfg.temperature), cfg.itc.weight
        if cfg.mtp.enabled and informative_mask.any():
            states = encode_text(model.clip, replace_tokens(tokens, informative_mask, rule, self.generator)).tokens
            logits = model.interaction.predict(model.fuse(states, image_features, image_tokens), informative_mask)
            out["mtp_loss"], weights["mtp_loss"] = losses.mtp_loss(logits, tokens[informative_mask]), cfg.mtp.weight
        if cfg.id.enabled and model.classifier is not None:
            out["id_loss"] = losses.id_loss(
                model.classifier(image_features), model.classifier(text_features), identities
            )
            weights["id_loss"] = cfg.id.weight
        if cfg.tic.enabled and partner_tokens is not None:
            has = (partner_tokens != tokens).any(dim=1)  # captions with a second caption of their image
            if has.sum() >= 2:
                partner = model.encode_text(partner_tokens[has])
                hard, kept = cfg.tic.hard_negatives, tokens[has]
                same = losses.same_image_pairs(kept, partner_tokens[has])  # never each other's negatives
                out["tic_loss"] = losses.tic_loss(
                    text_features[has], partner, identities[has], cfg.temperature, hard, same_image=same
                )
                weights["tic_loss"] = cfg.tic.weight
        if not out:
            raise ValueError("loss: every loss term is disabled; enable at least one of sdm, itc, mtp, id, tic")
        total: torch.Tensor = sum(weights[name] * value for name, value in out.items())  # type: ignore[assignment]
        return StepOutput(out, total, scores, noise_mask, informative_mask, {"scoring_s": self.last_scoring_s})


class StepModule(nn.Module):
    """Makes the training step a module forward so DDP can hook it."""

    def __init__(self, model: PersonRetrievalModel, step: TrainingStep):
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, images, tokens, identities, partners=None, indices=None, epoch=0):
        out = self.step(self.model, images, tokens, identities, partners, indices, epoch)
        return out.total, out.losses, out.scores


def count_valid(tokens: torch.Tensor) -> int:
    """Number of maskable tokens in a batch (for logging masking rates)."""
    return int(valid_token_mask(tokens).sum())
