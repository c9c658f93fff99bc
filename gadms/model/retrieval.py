"""The person retrieval model: a CLIP backbone plus the training-only heads.

:class:`PersonRetrievalModel` wraps the open_clip CLIP (image and text
towers), the interaction encoder used by masked-token prediction, and an
optional identity classifier. Weights are saved as safetensors with the
architecture in the file's metadata, and loaded back without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from gadms.model.backbone import BACKBONES, build_clip, load_pretrained
from gadms.model.files import ModelFileError, read_safetensors
from gadms.model.interaction import InteractionEncoder, IrraInteractionEncoder
from gadms.model.text_tower import encode_text, project_tokens
from gadms.reproducible_writes import atomic_path

# Largest value a model file may record per field: past these the model would not fit in memory anyway,
# and building it first (to compare the weights) must not exhaust memory.
_LARGEST = {
    "image_height": 8192,
    "image_width": 8192,
    "context_length": 4096,
    "interaction_heads": 256,
    "interaction_layers": 256,
    "num_identities": 10_000_000,
}
_TEXT_FIELDS = ("backbone", "interaction_variant", "interaction_activation")
# fields written only when they differ from these values: files of the older architecture keep their bytes
_WRITTEN_UNLESS = {"interaction_activation": "gelu"}


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
    interaction_activation: str = "gelu"  # gelu | quick_gelu (model.interaction.activation)

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
            interaction_activation=model_cfg.interaction.activation,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as recorded in model files and checkpoints (later fields left out at their old value)."""
        return {k: v for k, v in asdict(self).items() if k not in _WRITTEN_UNLESS or v != _WRITTEN_UNLESS[k]}

    def to_json(self) -> str:
        """:meth:`to_dict` as sorted JSON (what ``gadms_architecture`` holds; :meth:`from_json` reads it back)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: Any, source: Path | str) -> "Architecture":
        """The architecture recorded in a model file, checked field by field.

        Args:
            text: the JSON text stored with the weights.
            source: the file it came from (for the message).

        Returns:
            The architecture.

        Raises:
            ModelFileError: not JSON, unknown or missing fields, wrong types, an unknown backbone.
        """
        try:
            raw = json.loads(text) if isinstance(text, (str, bytes)) else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raw = None
        if not isinstance(raw, dict):
            raise ModelFileError(f"{source}: architecture metadata is not a JSON object: {str(text)[:60]!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            names = ", ".join(repr(name[:40]) for name in unknown[:3])
            raise ModelFileError(f"{source}: unknown architecture field(s) {names}; made by another version of gadms?")
        for name, value in raw.items():  # fields left out take their defaults, as in older files
            if name in _TEXT_FIELDS:
                ok = isinstance(value, str) and len(value) <= 40
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _LARGEST[name]
            if not ok:
                wanted = "a short string" if name in _TEXT_FIELDS else f"a count up to {_LARGEST[name]}"
                raise ModelFileError(f"{source}: architecture field {name!r} must be {wanted}, got {str(value)[:40]!r}")
        if raw.get("backbone", cls.backbone) not in BACKBONES:
            raise ModelFileError(f"{source}: unknown backbone {raw['backbone'][:40]!r} (known: {', '.join(BACKBONES)})")
        return cls(**raw)


class PersonRetrievalModel(nn.Module):
    """CLIP towers + interaction encoder (+ identity classifier)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        spec = BACKBONES[arch.backbone]
        self.clip = build_clip(arch.backbone, (arch.image_height, arch.image_width), arch.context_length)
        self.clip.visual.output_tokens = True
        self.interaction: InteractionEncoder | IrraInteractionEncoder
        heads, layers, act = arch.interaction_heads, arch.interaction_layers, arch.interaction_activation
        if arch.interaction_variant == "irra":
            self.interaction = IrraInteractionEncoder(spec.embed_dim, heads, layers, spec.vocab_size, act)
        elif arch.interaction_variant == "project":
            self.interaction = InteractionEncoder(
                spec.text_width, spec.vision_width, spec.text_width, heads, layers, spec.vocab_size, act
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


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding an infinite or NaN value (one device sync).

    Args:
        model: any module.

    Returns:
        The names, in module order; empty when every weight is finite.
    """
    named = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).tolist()
    return [n for (n, _), ok in zip(named, flags, strict=True) if not ok]


def save_model(model: PersonRetrievalModel, path: Path) -> Path:
    """Write weights as safetensors with the architecture in the metadata.

    Args:
        model: the model.
        path: the ``.safetensors`` file to write.

    Returns:
        ``path``.

    Raises:
        ValueError: a weight is infinite or NaN (such a model is never written, so never logged or registered).
    """
    bad = non_finite_weights(model)
    if bad:
        raise ValueError(f"{path}: not written: {len(bad)} weight tensor(s) are not finite, e.g. {bad[0]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"gadms_architecture": model.arch.to_json()}
    with atomic_path(path) as tmp:  # a reader never finds a half-written model under the final name
        save_file(state, str(tmp), metadata=metadata)
    return path


def build_with_weights(arch: Architecture, state: dict[str, torch.Tensor], source: Path | str) -> PersonRetrievalModel:
    """A model of ``arch`` holding ``state``; one line naming ``source`` when they do not fit.

    Args:
        arch: the recorded architecture.
        state: its weights.
        source: the file they came from (for the message).

    Returns:
        The model (on the CPU).

    Raises:
        ModelFileError: the architecture cannot be built, or the weights do not match it.
    """
    try:
        model = PersonRetrievalModel(arch)
    except ValueError as exc:
        raise ModelFileError(f"{source}: architecture cannot be built: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{source}: weights are not a mapping of names to tensors")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape"
        raise ModelFileError(f"{source}: weights do not fit its architecture ({counts}; e.g. {example[:50]!r})")
    model.load_state_dict(state)
    return model


def load_model(path: Path, map_location: str = "cpu") -> PersonRetrievalModel:
    """Rebuild a model saved by :func:`save_model` (no pickle involved).

    Args:
        path: the ``model.safetensors``.
        map_location: device of the returned model.

    Returns:
        The model.

    Raises:
        ModelFileError: one line naming the file: missing, empty, truncated, no or unknown architecture metadata,
            weights that do not fit it.
    """
    path = Path(path)
    state, meta = read_safetensors(path)
    if "gadms_architecture" not in meta:
        raise ModelFileError(f"{path}: not a gadms model file (no architecture metadata)")
    return build_with_weights(Architecture.from_json(meta["gadms_architecture"], path), state, path).to(map_location)
