"""Cross-modal interaction encoder for masked-token prediction (SPEC 5.3).

Text token states attend to image patch tokens through one multi-head
cross-attention, then pass 4 transformer layers; an MLP head predicts the
vocabulary at masked positions only.
"""

from __future__ import annotations

import torch
from torch import nn


class InteractionEncoder(nn.Module):
    """Cross-attention (text queries, image keys/values) + transformer layers + MLP vocabulary head.

    Args:
        text_width: width of the text tower's token states.
        vision_width: width of the image tower's patch tokens.
        width: width inside the encoder.
        heads: attention heads (cross-attention and transformer layers).
        layers: transformer layers after the cross-attention (paper: 4).
        vocab_size: output classes of the head.
    """

    def __init__(self, text_width: int, vision_width: int, width: int, heads: int, layers: int, vocab_size: int):
        super().__init__()
        self.text_in = nn.Linear(text_width, width)
        self.image_in = nn.Linear(vision_width, width)
        self.ln_query = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_out = nn.LayerNorm(width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size))

    def forward(self, text_states: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Fused token states ``(B, N, width)``."""
        query = self.ln_query(self.text_in(text_states))
        memory = self.ln_memory(self.image_in(image_tokens))
        fused = query + self.cross_attention(query, memory, memory, need_weights=False)[0]
        return self.ln_out(self.transformer(fused))

    def predict(self, fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``(M, V)`` at the ``M`` masked positions only."""
        return self.head(fused[mask])
