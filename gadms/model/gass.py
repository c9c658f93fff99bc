"""Gradient-Attention Similarity Score (SPEC 5.1) and the other masking scores.

GASS rates each caption token by how much it drives the caption's similarity
to its own image: per layer, the gradient of the pair's cosine similarity at
the [EOS] attention output, times each token's value contribution, times a
multi-scale query-key spatial weight, gated by [EOS]'s attention to the token.
All layer gradients come from a single backward pass over the last layers,
with image features held constant; the training loss's ``.grad`` is untouched.

Two variants: ``paper`` follows the paper's text (the model's own multi-head
attention averaged over heads; a raw query-key dot product min-maxed over the
valid tokens; the attention row over its own sum; the final score min-maxed
per caption). ``official`` follows the released code as described in issue 14:
the last layers re-run with a single attention head; the query-key weight is a
cosine min-maxed over every context position, padding included; the
attention row is divided by the sum of the importance term over every
position, start, end and padding included, taken before the word mask (the
sum can be negative and flip a layer's sign; issue 22); the final score is
divided by the whole batch's maximum.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gadms.model.text_tower import TextOutput, encode_text, project_tokens


def valid_token_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` bool: word tokens strictly between start-of-text and [EOS]."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    eos = tokens.argmax(dim=-1, keepdim=True)
    return (positions > 0) & (positions < eos)


def multiscale_pool(x: torch.Tensor, scales: tuple[int, ...]) -> torch.Tensor:
    """MSP: average-pool runs of ``c`` adjacent tokens, interpolate back, average over scales.

    Args:
        x: ``(B, N, D)`` token vectors.
        scales: window sizes; 1 is the identity.

    Returns:
        ``(B, N, D)``.
    """
    n = x.shape[1]
    seq = x.transpose(1, 2)  # (B, D, N)
    pooled = []
    for c in scales:
        if c == 1:
            pooled.append(seq)
            continue
        coarse = F.avg_pool1d(seq, kernel_size=c, stride=c, ceil_mode=True)
        pooled.append(F.interpolate(coarse, size=n, mode="linear", align_corners=False))
    return torch.stack(pooled).mean(dim=0).transpose(1, 2)


def minmax(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-row min-max scaling to [0, 1] over ``valid`` positions; 0 elsewhere."""
    big = torch.finfo(x.dtype).max
    lo = torch.where(valid, x, big).amin(dim=1, keepdim=True)
    hi = torch.where(valid, x, -big).amax(dim=1, keepdim=True)
    scaled = (x - lo) / (hi - lo).clamp_min(1e-12)
    return torch.where(valid, scaled, torch.zeros_like(x))


class GassScorer:
    """Computes GASS token scores for caption/image pairs.

    Args:
        layers: the last ``L`` text layers to use (paper: 8 of 12).
        scales: MSP window sizes C (paper: [1, 2]).
        variant: ``paper`` (the paper's formulas) or ``official`` (the released code's).
    """

    def __init__(
        self, layers: int = 8, scales: tuple[int, ...] = (1, 2), variant: Literal["paper", "official"] = "paper"
    ):
        if variant not in ("paper", "official"):
            raise ValueError(f"model.gass.variant: expected paper or official (got {variant!r})")
        self.layers = layers
        self.scales = tuple(scales)
        self.variant = variant

    @property
    def single_head(self) -> bool:
        """Whether the last layers are re-run with one attention head (the official variant)."""
        return self.variant == "official"

    def gradients(
        self, model: nn.Module, tokens: torch.Tensor, image_features: torch.Tensor
    ) -> tuple[list[torch.Tensor], TextOutput]:
        """dSIM/dT^l at every position for the last L layers, from one backward pass.

        Returns:
            The per-layer gradients ``(B, N, D)`` and the (detached) forward outputs.
        """
        with torch.enable_grad():
            out = encode_text(model, tokens, internals=self.layers, frozen_prefix=True, single_head=self.single_head)
            sim = F.cosine_similarity(out.features, image_features.detach(), dim=-1)
            outputs = [layer.output for layer in out.layers]
            # one backward: grads w.r.t. the L attention outputs only (no parameter .grad)
            grads = torch.autograd.grad(sim.sum(), outputs)
        # drop every reference into the (already freed) graph
        detached = TextOutput(
            out.features.detach(), out.tokens.detach(), out.eos_index, [layer.detached() for layer in out.layers]
        )
        return list(grads), detached

    def gradients_per_layer(
        self, model: nn.Module, tokens: torch.Tensor, image_features: torch.Tensor
    ) -> list[torch.Tensor]:
        """Reference: the same gradients with one ``autograd.grad`` call per layer (L backward passes)."""
        with torch.enable_grad():
            out = encode_text(model, tokens, internals=self.layers, frozen_prefix=True, single_head=self.single_head)
            sim = F.cosine_similarity(out.features, image_features.detach(), dim=-1).sum()
            last = len(out.layers) - 1
            return [
                torch.autograd.grad(sim, layer.output, retain_graph=i < last)[0] for i, layer in enumerate(out.layers)
            ]

    @torch.no_grad()
    def layer_score(self, grad: torch.Tensor, layer, eos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One layer's term ``S_g^l * S_a^l`` ``(B, N)`` (before averaging over layers and ReLU).

        Args:
            grad: ``(B, N, D)`` dSIM/dT^l.
            layer: the layer's :class:`LayerInternals`.
            eos: ``(B,)`` [EOS] positions.
            valid: ``(B, N)`` word-token mask.
        """
        rows = torch.arange(grad.shape[0], device=grad.device)
        g = grad[rows, eos]  # (B, D): gradient at the [EOS] attention output
        value = layer.value @ layer.out_proj_weight.T  # each token's value as it enters T^l
        q = multiscale_pool(layer.query, self.scales)[rows, eos]  # (B, D)
        k = multiscale_pool(layer.key, self.scales)  # (B, N, D)
        if self.variant == "official":
            spatial = minmax(F.cosine_similarity(q[:, None], k, dim=-1), torch.ones_like(valid))
        else:
            spatial = minmax(torch.einsum("bd,bnd->bn", q, k), valid)
        s_g = spatial * torch.einsum("bd,bnd->bn", g, value)
        attn = layer.attention.mean(dim=1)[rows, eos] * valid  # (B, N): [EOS]'s attention row
        if self.variant == "official":  # the importance summed over every position, before the word mask
            total = s_g.sum(dim=1, keepdim=True)
            return s_g * attn / torch.where(total.abs() < 1e-12, torch.full_like(total, 1e-12), total)
        return s_g * attn / attn.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def finalise(self, total: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """ReLU of the layer mean, scaled into [0, 1]: per caption (paper) or by the batch maximum (official)."""
        score = F.relu(total) * valid
        if self.variant == "official":
            return score / score.max().clamp_min(1e-12)
        return minmax(score, valid)

    def __call__(
        self, model: nn.Module, tokens: torch.Tensor, image_features: torch.Tensor, one_pass: bool = True
    ) -> torch.Tensor:
        """Scores ``(B, N)`` in [0, 1] on valid tokens, 0 on start/end/padding.

        ``one_pass=False`` takes the gradients with one backward per layer
        (slower; kept as the reference the fast path is tested and timed against).
        """
        if one_pass:
            grads, out = self.gradients(model, tokens, image_features)
        else:
            grads = self.gradients_per_layer(model, tokens, image_features)
            with torch.no_grad():
                out = encode_text(model, tokens, internals=self.layers, single_head=self.single_head)
        valid = valid_token_mask(tokens)
        with torch.no_grad():
            total = sum(self.layer_score(g, layer, out.eos_index, valid) for g, layer in zip(grads, out.layers))
            return self.finalise(torch.as_tensor(total) / len(grads), valid).detach()


@torch.no_grad()
def cosine_token_scores(model: nn.Module, tokens: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
    """The CSS baseline: each token's projected feature vs its image feature, min-max scaled."""
    out = encode_text(model, tokens)
    projected = F.normalize(project_tokens(model, out.tokens), dim=-1)
    sim = torch.einsum("bnd,bd->bn", projected, F.normalize(image_features, dim=-1))
    return minmax(sim, valid_token_mask(tokens))


def random_token_scores(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores on valid tokens (ablation baseline)."""
    noise = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)
    return noise * valid_token_mask(tokens)
