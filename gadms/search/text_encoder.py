"""The text tower alone, for queries: kept in the index, loaded without open_clip, MLflow or the image tower.

A query needs only the model's text tower. ``gadms index`` writes it next to
the embeddings as ``INDEX/text_encoder.safetensors``: the ``clip.`` text
tensors of the model, with the tower's shape, the SHA-256 of these tensors
and the identity digest of the whole model in the metadata. A search then
builds this tower (a transformer with the attribute names of open_clip's
text tower, run by the same :func:`gadms.model.text_tower.encode_text`, so the
same operations in the same order give the same embeddings) and tokenizes
with open_clip's own tokenizer file, loaded on its own (open_clip's package
imports torchvision and most of torch). Nothing is downloaded or trained.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gadms.model.files import ModelFileError
from gadms.model.text_tower import encode_text

TEXT_FILE = "text_encoder.safetensors"
_META_KEY = "gadms_text_encoder"


@dataclass(frozen=True)
class TextSpec:
    """The text tower's shape (open_clip's CLIP text fields) and the model it was cut from."""

    embed_dim: int
    width: int
    heads: int
    layers: int
    vocab_size: int
    context_length: int
    model_digest: str
    text_digest: str = ""


class _Block(nn.Module):
    """One text transformer block, computed as open_clip's ``ResidualAttentionBlock`` (pre-norm, no layer scale)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = nn.Identity()
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * width, width))]
            )
        )
        self.ls_2 = nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attn_mask.to(x.dtype) if attn_mask is not None else None
        h = self.ln_1(x)  # one tensor as query, key and value: the packed self-attention path, as open_clip's
        x = x + self.ls_1(self.attn(h, h, h, need_weights=False, attn_mask=mask)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class _Transformer(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.batch_first = True
        self.resblocks = nn.ModuleList([_Block(width, heads) for _ in range(layers)])


class _Tower(nn.Module):
    """The parts :func:`~gadms.model.text_tower.encode_text` reads, under open_clip's CLIP names."""

    def __init__(self, spec: TextSpec):
        super().__init__()
        # given weights: no random initialisation (the tower is loaded right after)
        self.token_embedding = nn.Embedding(
            spec.vocab_size, spec.width, _weight=torch.empty(spec.vocab_size, spec.width)
        )
        self.positional_embedding = nn.Parameter(torch.empty(spec.context_length, spec.width))
        self.transformer = _Transformer(spec.width, spec.heads, spec.layers)
        self.ln_final = nn.LayerNorm(spec.width)
        self.text_projection = nn.Parameter(torch.empty(spec.width, spec.embed_dim))
        self.cls_emb = None
        self.attn_mask: torch.Tensor
        self.register_buffer("attn_mask", torch.empty(0), persistent=False)


@dataclass(frozen=True)
class TextArch:
    """What the query path reads of an architecture."""

    context_length: int


class TextEncoder(nn.Module):
    """The text tower of a gadms model: ``embed_texts`` as :meth:`PersonRetrievalModel.embed_texts`."""

    def __init__(self, spec: TextSpec):
        super().__init__()
        self.spec = spec
        self.arch = TextArch(spec.context_length)
        self.clip = _Tower(spec)

    @torch.no_grad()
    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings for retrieval."""
        return F.normalize(encode_text(self.clip, tokens).features, dim=-1)


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over tensors in name order (name, dtype, shape, bytes): a model's identity digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _text_keys(spec: TextSpec) -> list[str]:
    """The tower's tensor names (a model's ``clip.`` text tensors)."""
    with torch.device("meta"):
        return sorted(TextEncoder(spec).state_dict())


def text_state(model: nn.Module, spec: TextSpec) -> dict[str, torch.Tensor]:
    """The text tower's tensors of a full model (``PersonRetrievalModel``), on the CPU, contiguous."""
    full = model.state_dict()
    return {key: full[key].detach().cpu().contiguous() for key in _text_keys(spec)}


def write_text_encoder(directory: Path, model: nn.Module, model_digest: str) -> Path:
    """Write ``directory/text_encoder.safetensors`` for ``model`` (a temporary file, then renamed).

    Args:
        directory: the index directory.
        model: the full ``PersonRetrievalModel``.
        model_digest: its identity digest (as the index records it).

    Returns:
        The file.
    """
    from safetensors.torch import save

    from gadms.model.backbone import BACKBONES

    arch: Any = getattr(model, "arch")  # noqa: B009 - a PersonRetrievalModel's Architecture
    b = BACKBONES[arch.backbone]
    spec = TextSpec(
        b.embed_dim, b.text_width, b.text_heads, b.text_layers, b.vocab_size, arch.context_length, model_digest
    )
    state = text_state(model, spec)
    spec = TextSpec(**(asdict(spec) | {"text_digest": tensors_digest(state)}))
    path = Path(directory) / TEXT_FILE
    tmp = path.with_name(f".{TEXT_FILE}.tmp")
    tmp.write_bytes(save(state, metadata={_META_KEY: json.dumps(asdict(spec), sort_keys=True)}))
    tmp.replace(path)
    return path


def text_encoder_digest(directory: Path) -> str | None:
    """The model digest recorded in ``directory/text_encoder.safetensors`` (None when missing or unreadable)."""
    try:
        return _read_spec(Path(directory) / TEXT_FILE).model_digest
    except ModelFileError:
        return None


def _read_spec(path: Path) -> TextSpec:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            raw = json.loads((handle.metadata() or {})[_META_KEY])
        return TextSpec(**raw)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a gadms text encoder ({type(exc).__name__})") from None


def load_text_encoder(path: Path, model_digest: str) -> TextEncoder:
    """The text tower stored by :func:`write_text_encoder`, checked against the index's model digest.

    Raises:
        ModelFileError: unreadable, cut from another model, or tensors that are not the ones recorded.
    """
    from gadms.model.files import read_safetensors

    spec = _read_spec(path)
    if spec.model_digest != model_digest:
        raise ModelFileError(f"{path}: cut from model {spec.model_digest[:12]}, the index's is {model_digest[:12]}")
    state, _ = read_safetensors(path)
    with torch.device("meta"):  # no memory and no random initialisation: the weights are assigned next
        encoder = TextEncoder(spec)
    if sorted(state) != sorted(encoder.state_dict()) or tensors_digest(state) != spec.text_digest:
        raise ModelFileError(f"{path}: its tensors are not the ones recorded (damaged); `gadms index` writes it again")
    encoder.load_state_dict(state, assign=True)
    n = spec.context_length
    encoder.clip.attn_mask = torch.empty(n, n).fill_(float("-inf")).triu_(1)  # open_clip's causal mask
    return encoder.eval()


def _standalone_tokenizer_module() -> ModuleType:
    """open_clip's ``tokenizer.py`` (no relative imports), loaded without running open_clip's ``__init__``."""
    loaded = sys.modules.get("open_clip.tokenizer")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    file_spec = importlib.util.spec_from_file_location("gadms_open_clip_tokenizer", Path(locations[0]) / "tokenizer.py")
    if file_spec is None or file_spec.loader is None:
        raise ImportError("open_clip/tokenizer.py not found")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


def query_tokenizer(context_length: int) -> Callable[[list[str]], torch.Tensor]:
    """CLIP's BPE tokenizer (open_clip's ``SimpleTokenizer``) for ``context_length`` tokens, as
    :func:`gadms.model.backbone.tokenizer` builds it: the one the module builds on import (building the BPE
    vocabulary takes a tenth of a second), asked for ``context_length``.
    """
    try:
        module = _standalone_tokenizer_module()
    except (ImportError, IndexError, OSError):  # a future open_clip whose tokenizer needs its package
        from gadms.model.backbone import tokenizer

        return tokenizer(context_length)
    return partial(module._tokenizer, context_length=context_length)
