"""Access to the internals of an open_clip text tower.

:func:`encode_text` runs the model's own text blocks; for the last ``L`` it
re-runs each block from that block's own weights (layer norms, packed
``in_proj``, ``out_proj``, layer scale, MLP) so that per layer the query, key,
value, attention weights and attention output at every position are
available, without copying or re-implementing any particular transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LayerInternals:
    """One text layer: tensors are ``(B, N, D)`` except ``attention`` ``(B, heads, N, N)``."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attention: torch.Tensor
    output: torch.Tensor  # attention output (after out_proj) at every position: T^l
    out_proj_weight: torch.Tensor

    def detached(self) -> "LayerInternals":
        """A copy cut from the autograd graph."""
        return LayerInternals(
            *(t.detach() for t in (self.query, self.key, self.value, self.attention, self.output, self.out_proj_weight))
        )


@dataclass
class TextOutput:
    """Text tower outputs: projected [EOS] feature, per-token features and layer internals."""

    features: torch.Tensor  # (B, E) projected, not normalised
    tokens: torch.Tensor  # (B, N, width) after the final layer norm
    eos_index: torch.Tensor  # (B,)
    layers: list[LayerInternals] = field(default_factory=list)


def tower_parts(model: nn.Module) -> Any:
    """The module holding the text tower's parts (CLIP itself, or CustomTextCLIP.text)."""
    return model.text if hasattr(model, "text") and hasattr(model.text, "transformer") else model


def text_layers(model: nn.Module) -> int:
    """Number of transformer blocks in the text tower."""
    return len(tower_parts(model).transformer.resblocks)


def _attention(
    block: Any, x: torch.Tensor, attn_mask: torch.Tensor | None, single_head: bool = False
) -> tuple[torch.Tensor, LayerInternals]:
    """Re-run ``block``'s self-attention from its own weights, keeping the internals.

    ``single_head`` treats the packed projections as one head of the full width
    (a Grad-ECLIP-style re-run, as the official GA-DMS code scores with).
    """
    attn: nn.MultiheadAttention = block.attn
    b, n, d = x.shape
    heads = 1 if single_head else attn.num_heads
    h = block.ln_1(x)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, n, heads, d // heads).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / (d // heads) ** 0.5
    if attn_mask is not None:
        scores = scores + attn_mask[:n, :n].to(scores.dtype)
    weights = scores.softmax(dim=-1)
    mixed = (weights @ split(v)).transpose(1, 2).reshape(b, n, d)
    output = attn.out_proj(mixed)
    return output, LayerInternals(q, k, v, weights, output, attn.out_proj.weight)


def _block_with_internals(
    block: Any, x: torch.Tensor, attn_mask: torch.Tensor | None, single_head: bool = False
) -> tuple[torch.Tensor, LayerInternals]:
    output, internals = _attention(block, x, attn_mask, single_head)
    x = x + block.ls_1(output)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, internals


def encode_text(
    model: nn.Module, tokens: torch.Tensor, internals: int = 0, frozen_prefix: bool = False, single_head: bool = False
) -> TextOutput:
    """Encode token ids with the model's text tower.

    Args:
        model: an open_clip CLIP (or CustomTextCLIP with an open_clip text transformer).
        tokens: ``(B, N)`` token ids; [EOS] is the highest id of each row.
        internals: keep the internals of the last ``internals`` layers.
        frozen_prefix: run the layers before those under ``torch.no_grad``
            (for scoring passes that only need gradients in the last layers).
        single_head: re-run those last layers with one attention head of the full width.

    Returns:
        Features, final token states and the requested layer internals.
    """
    tower = tower_parts(model)
    blocks = tower.transformer.resblocks
    if internals > len(blocks):
        raise ValueError(f"model.gass.layers: {internals} exceeds the text tower's {len(blocks)} layers")
    if getattr(tower, "cls_emb", None) is not None:
        raise ValueError("text towers with a class token are not supported")
    batch_first = getattr(tower.transformer, "batch_first", True)
    attn_mask = tower.attn_mask
    split = len(blocks) - internals
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_prefix):
        x = tower.token_embedding(tokens) + tower.positional_embedding[: tokens.shape[1]]
        for block in blocks[:split]:
            x = (
                block(x, attn_mask=attn_mask)
                if batch_first
                else block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
            )
    if frozen_prefix and torch.is_grad_enabled():
        # the graph starts here, whether or not the weights are trainable
        x = x.detach().requires_grad_(True)
    layers = []
    for block in blocks[split:]:
        x, inner = _block_with_internals(block, x, attn_mask, single_head)
        layers.append(inner)
    x = tower.ln_final(x)
    eos = tokens.argmax(dim=-1)
    pooled = x[torch.arange(x.shape[0], device=x.device), eos]
    proj = tower.text_projection
    if proj is not None:
        pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
    return TextOutput(features=pooled, tokens=x, eos_index=eos, layers=layers)


def project_tokens(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Map per-token final states into the joint embedding space (as [EOS] is)."""
    proj = tower_parts(model).text_projection
    if proj is None:
        return tokens
    return proj(tokens) if isinstance(proj, nn.Linear) else tokens @ proj
