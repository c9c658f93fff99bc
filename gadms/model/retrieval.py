"""The person retrieval model: a CLIP backbone plus the training-only heads.

:class:`PersonRetrievalModel` wraps the open_clip CLIP (image and text
towers), the interaction encoder used by masked-token prediction, and an
optional identity classifier. Weights are saved as safetensors with the
architecture in the file's metadata, and loaded back without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from gadms.model.backbone import BACKBONES, build_clip, load_pretrained
from gadms.model.interaction import InteractionEncoder, IrraInteractionEncoder
from gadms.model.text_tower import encode_text, project_tokens


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a model before loading its weights."""

    backbone: str = "tiny"
    image_height: int = 128
    image_width: int = 64
    context_length: int = 77
    interaction_heads: int = 8
    interaction_layers: int = 4
    num_identities: int = 0  # > 0 adds an identity classifier
    interaction_variant: str = "project"  # project | irra (model.interaction.variant)

    @classmethod
    def from_config(cls, model_cfg, num_identities: int = 0) -> "Architecture":
        """Architecture from a :class:`gadms.config.ModelConfig`."""
        return cls(
            backbone=model_cfg.backbone,
            image_height=model_cfg.image_height,
            image_width=model_cfg.image_width,
            context_length=model_cfg.context_length,
            interaction_heads=model_cfg.interaction.cross_attention_heads,
            interaction_layers=model_cfg.interaction.layers,
            num_identities=num_identities,
            interaction_variant=model_cfg.interaction.variant,
        )


class PersonRetrievalModel(nn.Module):
    """CLIP towers + interaction encoder (+ identity classifier)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        spec = BACKBONES[arch.backbone]
        self.clip = build_clip(arch.backbone, (arch.image_height, arch.image_width), arch.context_length)
        self.clip.visual.output_tokens = True
        self.interaction: InteractionEncoder | IrraInteractionEncoder
        if arch.interaction_variant == "irra":
            self.interaction = IrraInteractionEncoder(
                spec.embed_dim, arch.interaction_heads, arch.interaction_layers, spec.vocab_size
            )
        elif arch.interaction_variant == "project":
            heads, layers = arch.interaction_heads, arch.interaction_layers
            self.interaction = InteractionEncoder(
                spec.text_width, spec.vision_width, spec.text_width, heads, layers, spec.vocab_size
            )
        else:
            raise ValueError(f"model.interaction.variant: expected project or irra (got {arch.interaction_variant!r})")
        self.classifier = nn.Linear(spec.embed_dim, arch.num_identities) if arch.num_identities > 0 else None

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (B, E), patch tokens (B, P, vision_width))`` for ``(B, 3, H, W)`` images."""
        features, tokens = self.clip.visual(images)
        return features, tokens

    def fuse(self, text_states: torch.Tensor, image_features: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """The interaction encoder's fused states for masked-token prediction.

        Args:
            text_states: ``(B, N, text_width)`` final text token states (after ``ln_final``).
            image_features: ``(B, E)`` projected image features (the CLS output).
            image_tokens: ``(B, P, vision_width)`` patch tokens (after ``ln_post``, unprojected).

        Returns:
            ``(B, N, width)``: the ``irra`` variant sees projected text tokens and the
            projected image sequence with CLS first; ``project`` the raw states and patches.
        """
        if self.arch.interaction_variant == "irra":
            image = torch.cat([image_features[:, None], image_tokens @ self.clip.visual.proj], dim=1)
            return self.interaction(project_tokens(self.clip, text_states), image)
        return self.interaction(text_states, image_tokens)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Projected [EOS] features ``(B, E)``."""
        return encode_text(self.clip, tokens).features

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings for retrieval."""
        return F.normalize(self.encode_image(images)[0], dim=-1)

    @torch.no_grad()
    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings for retrieval."""
        return F.normalize(self.encode_text(tokens), dim=-1)

    def load_clip_weights(self, source: str) -> None:
        """Load pre-trained CLIP weights (local file or open_clip tag) into the backbone."""
        arch = "ViT-B-16" if self.arch.backbone == "ViT-B-16" else self.arch.backbone
        load_pretrained(self.clip, source, arch)


def save_model(model: PersonRetrievalModel, path: Path) -> Path:
    """Write weights as safetensors with the architecture in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"gadms_architecture": json.dumps(asdict(model.arch), sort_keys=True)})
    return path


def load_model(path: Path, map_location: str = "cpu") -> PersonRetrievalModel:
    """Rebuild a model saved by :func:`save_model` (no pickle involved)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if "gadms_architecture" not in meta:
        raise ValueError(f"{path}: not a gadms model file (no architecture metadata)")
    model = PersonRetrievalModel(Architecture(**json.loads(meta["gadms_architecture"])))
    model.load_state_dict(load_file(str(path), device=map_location))
    return model
