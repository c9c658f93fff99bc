"""Dual masking (SPEC 5.2): noise-token masking and informative-token masking.

A token with score s (high = informative) is masked for the alignment loss with
probability ``alpha_n * sigmoid(slope * ((1 - s) - gamma_n))`` (noisy tokens
go first) and for masked-token prediction with probability
``alpha_i * sigmoid(slope * (s - gamma_i))`` (informative tokens go first).
Start, end and padding tokens are never masked.

A masked token becomes the mask token (rule ``mask``), or, BERT-style (rule
``bert``), the mask token 80% of the time, a random word token 10% and stays
itself 10% (it is still a prediction target).
"""

from __future__ import annotations

from typing import Literal

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


def replace_tokens(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    rule: Literal["mask", "bert"],
    generator: torch.Generator,
    mask_token_id: int = MASK_TOKEN_ID,
) -> torch.Tensor:
    """The caption with its masked positions replaced by ``rule`` (returns a new tensor).

    Args:
        tokens: ``(B, N)`` token ids.
        mask: ``(B, N)`` bool, the positions to replace.
        rule: ``mask`` (always the mask token) or ``bert`` (80% mask token, 10% a random
            word token drawn from ids 1 .. mask_token_id - 1, 10% unchanged).
        generator: CPU generator for the draws (the same seed gives the same caption on any device).
        mask_token_id: id of the mask token.

    Returns:
        ``(B, N)`` token ids.
    """
    if rule == "mask":
        return apply_mask(tokens, mask, mask_token_id)
    draws = torch.rand(tokens.shape, generator=generator).to(tokens.device)
    random_ids = torch.randint(1, mask_token_id, tokens.shape, generator=generator).to(tokens.device)
    out = torch.where(mask & (draws < 0.8), torch.full_like(tokens, mask_token_id), tokens)
    return torch.where(mask & (draws >= 0.8) & (draws < 0.9), random_ids.to(tokens.dtype), out)


def ensure_one_masked(mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mask position 1 (the first word) of every caption that has nothing masked (returns a new mask)."""
    out = mask.clone()
    empty = ~mask.any(dim=1) & valid_token_mask(tokens)[:, 1]
    out[empty, 1] = True
    return out
