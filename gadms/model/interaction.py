"""Cross-modal interaction encoders for masked-token prediction (SPEC 5.3).

Text token states attend to image tokens through one multi-head
cross-attention, then pass 4 transformer layers; an MLP head predicts the
vocabulary at masked positions only. Two variants:

- :class:`InteractionEncoder` (``project``): input layers on the unprojected
  text states and patch tokens, a residual round the cross-attention.
- :class:`IrraInteractionEncoder` (``irra``, what the official GA-DMS code uses):
  the projected text tokens attend to the projected image tokens with the
  image's CLS feature, the cross-attention's output alone goes on (no
  residual, so a prediction cannot bypass the image), and weights start from
  IRRA's normal initialisation.

Both use GELU in their MLPs and vocabulary head, or (``activation:
quick_gelu``, what IRRA's and the official GA-DMS encoder use) CLIP's
QuickGELU, ``x * sigmoid(1.702 x)``.
"""

from __future__ import annotations

import torch
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's approximation of GELU: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation_module(name: str) -> nn.Module:
    """The named activation (``gelu`` or ``quick_gelu``); a one-line error for anything else."""
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"model.interaction.activation: expected gelu or quick_gelu (got {str(name)[:40]!r})")


def _transformer_and_head(width: int, heads: int, layers: int, vocab_size: int, activation: str):
    """The encoder's transformer layers and its MLP vocabulary head, both with ``activation``."""
    act = activation_module(activation)  # checks the name
    layer = nn.TransformerEncoderLayer(  # gelu by name, as before: torch's own path, same numbers
        width,
        heads,
        4 * width,
        dropout=0.0,
        activation="gelu" if activation == "gelu" else act,
        batch_first=True,
        norm_first=True,
    )
    transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    head = nn.Sequential(
        nn.Linear(width, width), activation_module(activation), nn.LayerNorm(width), nn.Linear(width, vocab_size)
    )
    return transformer, head


class InteractionEncoder(nn.Module):
    """Cross-attention (text queries, image keys/values) + transformer layers + MLP vocabulary head.

    Args:
        text_width: width of the text tower's token states.
        vision_width: width of the image tower's patch tokens.
        width: width inside the encoder.
        heads: attention heads (cross-attention and transformer layers).
        layers: transformer layers after the cross-attention (paper: 4).
        vocab_size: output classes of the head.
        activation: ``gelu`` or ``quick_gelu``.
    """

    def __init__(
        self,
        text_width: int,
        vision_width: int,
        width: int,
        heads: int,
        layers: int,
        vocab_size: int,
        activation: str = "gelu",
    ):
        super().__init__()
        self.text_in = nn.Linear(text_width, width)
        self.image_in = nn.Linear(vision_width, width)
        self.ln_query = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        transformer, head = _transformer_and_head(width, heads, layers, vocab_size, activation)
        self.transformer = transformer
        self.ln_out = nn.LayerNorm(width)
        self.head = head  # registered in the order older model files list their weights

    def forward(self, text_states: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Fused token states ``(B, N, width)``."""
        query = self.ln_query(self.text_in(text_states))
        memory = self.ln_memory(self.image_in(image_tokens))
        fused = query + self.cross_attention(query, memory, memory, need_weights=False)[0]
        return self.ln_out(self.transformer(fused))

    def predict(self, fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``(M, V)`` at the ``M`` masked positions only."""
        return self.head(fused[mask])


class IrraInteractionEncoder(nn.Module):
    """IRRA's cross-modal encoder on the joint embedding space (no input layers, no residual).

    Args:
        width: the joint embedding width (text and image tokens arrive projected).
        heads: attention heads.
        layers: transformer layers after the cross-attention.
        vocab_size: output classes of the head.
        activation: ``gelu`` or ``quick_gelu`` (IRRA's).
    """

    def __init__(self, width: int, heads: int, layers: int, vocab_size: int, activation: str = "gelu"):
        super().__init__()
        self.ln_query = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        transformer, head = _transformer_and_head(width, heads, layers, vocab_size, activation)
        self.transformer = transformer
        self.ln_out = nn.LayerNorm(width)
        self.head = head  # registered in the order older model files list their weights
        self._initialise(width, layers)

    def _initialise(self, width: int, layers: int) -> None:
        """Normal init: attention inputs std w^-0.5, output projections w^-0.5 (2L)^-0.5, MLP inputs (2w)^-0.5."""
        attn_std = width**-0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.layers:
            nn.init.normal_(block.self_attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.self_attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.linear1.weight, std=fc_std)
            nn.init.normal_(block.linear2.weight, std=proj_std)
        nn.init.normal_(self.cross_attention.in_proj_weight, std=attn_std)
        nn.init.normal_(self.cross_attention.out_proj.weight, std=proj_std)
        dense, out = self.head[0], self.head[3]
        assert isinstance(dense, nn.Linear) and isinstance(out, nn.Linear)
        nn.init.normal_(dense.weight, std=fc_std)
        nn.init.normal_(out.weight, std=proj_std)

    def forward(self, text_states: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Fused states ``(B, N, width)`` from projected text ``(B, N, width)`` and image ``(B, 1 + P, width)``."""
        memory = self.ln_memory(image_tokens)
        fused = self.cross_attention(self.ln_query(text_states), memory, memory, need_weights=False)[0]
        return self.ln_out(self.transformer(fused))

    def predict(self, fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``(M, V)`` at the ``M`` masked positions only."""
        return self.head(fused[mask])
