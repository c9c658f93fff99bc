"""CLIP backbones through open_clip: named configurations, tokenizer, safe weight loading.

``ViT-B-16`` is the paper's backbone (image 384x128, text context 77); ``tiny``
is a few-layer, narrow CLIP at 128x64 for CPU tests and the demo. Both use
CLIP's BPE tokenizer (shipped inside open_clip, no download).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from gadms.model.files import ModelFileError, read_safetensors, read_torch_file

# CLIP's vocabulary ends with the start and end tokens; the last BPE merge
# before them ("jekyll</w>") is reserved as the mask token, so ids stay below
# the end token and [EOS] pooling by argmax keeps working.
SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
MASK_TOKEN_ID = 49405
PAD_TOKEN_ID = 0


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of a named backbone (open_clip's CLIP fields)."""

    embed_dim: int
    image_size: tuple[int, int]  # height, width
    vision_layers: int
    vision_width: int
    vision_head_width: int
    patch_size: int
    text_width: int
    text_heads: int
    text_layers: int
    vocab_size: int = 49408


BACKBONES: dict[str, BackboneSpec] = {
    "ViT-B-16": BackboneSpec(512, (384, 128), 12, 768, 64, 16, 512, 8, 12),
    "tiny": BackboneSpec(64, (128, 64), 3, 64, 32, 16, 64, 4, 8),
}


class BackboneError(ValueError):
    """A backbone name, checkpoint or tag cannot be used (one-line message)."""


def build_clip(name: str, image_size: tuple[int, int] | None = None, context_length: int = 77) -> CLIP:
    """Build an open_clip :class:`CLIP` with random weights.

    Args:
        name: a key of :data:`BACKBONES`.
        image_size: ``(height, width)``; defaults to the backbone's own.
        context_length: text length in tokens.

    Returns:
        The model in train mode on the CPU.
    """
    if name not in BACKBONES:
        raise BackboneError(f"model.backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    size = tuple(image_size or spec.image_size)
    if size[0] % spec.patch_size or size[1] % spec.patch_size:
        raise BackboneError(
            f"model.image_height/width: {size[0]}x{size[1]} is not a multiple of the patch size {spec.patch_size}"
        )
    vision = CLIPVisionCfg(
        layers=spec.vision_layers,
        width=spec.vision_width,
        head_width=spec.vision_head_width,
        patch_size=spec.patch_size,
        image_size=size,
    )
    text = CLIPTextCfg(
        context_length=context_length,
        vocab_size=spec.vocab_size,
        width=spec.text_width,
        heads=spec.text_heads,
        layers=spec.text_layers,
    )
    return CLIP(embed_dim=spec.embed_dim, vision_cfg=vision, text_cfg=text)


def tokenizer(context_length: int = 77) -> open_clip.tokenizer.SimpleTokenizer:
    """CLIP's BPE tokenizer; texts longer than ``context_length`` are truncated (keeping [EOS])."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load weights without running arbitrary pickle code."""
    if path.suffix == ".safetensors":
        try:
            return read_safetensors(path)[0]
        except ModelFileError as exc:
            raise BackboneError(str(exc)) from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            is_torchscript = any(n.endswith("constants.pkl") for n in archive.namelist())
        if is_torchscript:  # OpenAI's released .pt files are TorchScript archives
            try:
                return torch.jit.load(str(path), map_location="cpu").state_dict()
            except (RuntimeError, ValueError, OSError) as exc:
                reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
                raise BackboneError(f"{path}: TorchScript archive cannot be read ({reason})") from None
    try:
        obj = read_torch_file(path)
    except ModelFileError as exc:
        raise BackboneError(f"{exc}; re-save it as a state dict or safetensors") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BackboneError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_pretrained(model: CLIP, source: str, arch: str = "ViT-B-16") -> None:
    """Load CLIP weights into ``model`` from a local file or an open_clip pretrained tag.

    The visual position embeddings are resized to the model's grid (e.g.
    14x14 at 224 to 24x8 at 384x128), the text ones to its context length.

    Args:
        model: the model to fill.
        source: a local ``.pt``/``.bin``/``.safetensors`` path (open_clip
            checkpoint or OpenAI TorchScript ``.pt``), or a tag such as
            ``openai`` (needs network: the file is downloaded by open_clip).
        arch: open_clip architecture name used to resolve a tag.
    """
    path = Path(source).expanduser()
    if not path.exists():
        if any(sep in source for sep in ("/", "\\")) or path.suffix:
            raise BackboneError(f"model.pretrained: file {source} not found")
        cfg = open_clip.get_pretrained_cfg(arch, source)
        if not cfg:
            raise BackboneError(f"model.pretrained: {source!r} is neither a file nor an open_clip tag of {arch}")
        try:
            path = Path(open_clip.download_pretrained(cfg))
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise BackboneError(
                f"model.pretrained: could not download tag {source!r} ({type(exc).__name__}); pass a local file instead"
            ) from None
    state = {k.removeprefix("module."): v for k, v in _read_state_dict(path).items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    open_clip.model.resize_pos_embed(state, model)
    open_clip.model.resize_text_pos_embed(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneError(
            f"{path}: weights do not fit this backbone (missing {len(missing)}, e.g. {missing[:2]}; unexpected "
            f"{len(unexpected)}, e.g. {unexpected[:2]})"
        )
