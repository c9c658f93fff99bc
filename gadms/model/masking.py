"""Dual masking (SPEC 5.2): noise-token masking and informative-token masking.

A token with score s (high = informative) is masked for the alignment loss with
probability ``alpha_n * sigmoid(slope * ((1 - s) - midpoint))`` (noisy tokens
go first) and for masked-token prediction with probability
``alpha_i * sigmoid(slope * (s - midpoint))`` (informative tokens go first).
Start, end and padding tokens are never masked.
"""

from __future__ import annotations

import torch

from gadms.model.backbone import MASK_TOKEN_ID
from gadms.model.gass import valid_token_mask


def noise_mask_probability(scores: torch.Tensor, alpha: float, slope: float, midpoint: float) -> torch.Tensor:
    """p_i = alpha_n / (1 + exp(-lambda * ((1 - s_i) - gamma)))."""
    return alpha * torch.sigmoid(slope * ((1.0 - scores) - midpoint))


def informative_mask_probability(scores: torch.Tensor, alpha: float, slope: float, midpoint: float) -> torch.Tensor:
    """p_i = alpha_i / (1 + exp(-lambda * (s_i - gamma)))."""
    return alpha * torch.sigmoid(slope * (scores - midpoint))


def sample_mask(probability: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw a ``(B, N)`` bool mask with the given per-token probabilities on valid tokens only.

    The uniform draws come from ``generator`` on the CPU, so the same seed gives
    the same mask on any device.
    """
    draws = torch.rand(probability.shape, generator=generator, dtype=torch.float32).to(probability.device)
    return (draws < probability) & valid_token_mask(tokens)


def apply_mask(tokens: torch.Tensor, mask: torch.Tensor, mask_token_id: int = MASK_TOKEN_ID) -> torch.Tensor:
    """Replace masked positions by the mask token (returns a new tensor)."""
    return torch.where(mask, torch.full_like(tokens, mask_token_id), tokens)
