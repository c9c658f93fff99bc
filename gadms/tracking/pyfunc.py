"""The retrieval model as an MLflow pyfunc: text or images in, L2-normalised embeddings out.

``mlflow.pyfunc.load_model(uri).predict(df)`` takes a pandas DataFrame with
exactly one of two columns:

- ``text``: captions (strings) -> their text embeddings;
- ``image``: encoded images (JPEG or PNG bytes; base64 strings are accepted
  too, which is how a REST client sends binary columns) -> image embeddings.

It returns a float32 array ``(rows, embed_dim)``; rows are unit vectors, so
the cosine similarity of a caption and an image is their dot product. The
model runs on CUDA when available; ``load_model(uri, model_config={"device":
"cpu"})`` picks another device.

What is logged: the weights as ``model.safetensors`` (architecture in the
file's metadata, no pickle), the ``gadms`` package as code (so a serving
environment needs only the pinned pip requirements), a signature and an input
example. The Python model itself is "models from code": a three-line script
that builds :class:`RetrievalPyfunc`, so nothing is pickled either.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema, TensorSpec

from gadms.model.backbone import BACKBONES
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model

WEIGHTS_ARTIFACT = "model"
TEXT_COLUMN = "text"
IMAGE_COLUMN = "image"
EXAMPLE_CAPTION = "A woman in a red coat and black trousers carrying a white bag."
REQUIREMENTS = ("mlflow", "torch", "torchvision", "open_clip_torch", "safetensors", "pillow", "numpy", "pandas", "pydantic", "pyyaml", "tqdm")
_MODEL_CODE = (
    "# Builds the gadms retrieval pyfunc (MLflow models-from-code).\n"
    "from mlflow.models import set_model\n"
    "from gadms.tracking.pyfunc import RetrievalPyfunc\n\n"
    "set_model(RetrievalPyfunc())\n"
)


class RetrievalPyfunc(mlflow.pyfunc.PythonModel):
    """Embeds captions or images with a :class:`PersonRetrievalModel` loaded from its safetensors artifact."""

    def load_context(self, context) -> None:
        """Load the weights onto the configured device.

        Args:
            context: MLflow's context; ``context.artifacts["model"]`` is the safetensors file;
                ``context.model_config["device"]`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; set with
                ``mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})``) picks the device,
                ``auto`` (default) meaning CUDA when available.
        """
        import torch

        from gadms.model.retrieval import load_model

        device = str((context.model_config or {}).get("device", "auto"))
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = load_model(Path(context.artifacts[WEIGHTS_ARTIFACT])).to(self.device).eval()

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Embeddings of the ``text`` or the ``image`` column.

        Args:
            context: MLflow's context (unused).
            model_input: a DataFrame with exactly one of the columns ``text`` and ``image``.
            params: unused.

        Returns:
            ``(rows, embed_dim)`` float32, each row L2-normalised.
        """
        return embed_frame(self.model, model_input, self.device)


def image_bytes(value: Any) -> bytes:
    """Encoded image bytes from a cell of the ``image`` column.

    Args:
        value: bytes (or bytearray, memoryview) or a base64 string.

    Returns:
        The bytes.

    Raises:
        ValueError: a string that is not base64, or another type.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("image column: a string cell must be base64-encoded image bytes") from None
    raise ValueError(f"image column: expected bytes or a base64 string, got {type(value).__name__}")


def embed_frame(model: PersonRetrievalModel, frame: pd.DataFrame, device: str = "cpu") -> np.ndarray:
    """Embed a DataFrame's ``text`` or ``image`` column (the pyfunc's ``predict``).

    Args:
        model: the model, on ``device``.
        frame: exactly one of the columns ``text`` and ``image``.
        device: where to encode.

    Returns:
        ``(rows, embed_dim)`` float32 L2-normalised embeddings, in row order.
    """
    from gadms.eval.evaluate import encode_images, encode_texts

    columns = [c for c in (TEXT_COLUMN, IMAGE_COLUMN) if c in frame.columns]
    if len(columns) != 1:
        raise ValueError(f"input needs exactly one of the columns 'text' or 'image', got {list(frame.columns)}")
    if len(frame) == 0:
        return np.zeros((0, BACKBONES[model.arch.backbone].embed_dim), dtype=np.float32)
    if columns[0] == TEXT_COLUMN:
        features = encode_texts(model, [str(t) for t in frame[TEXT_COLUMN]], device=device)
    else:
        features = encode_images(model, [image_bytes(v) for v in frame[IMAGE_COLUMN]], device=device)
    return features.numpy().astype(np.float32)


def embedding_signature(embed_dim: int) -> ModelSignature:
    """The pyfunc's signature: optional ``text`` (string) and ``image`` (binary) columns in, ``(-1, embed_dim)`` float32 out.

    Args:
        embed_dim: the embedding width.

    Returns:
        The signature.
    """
    inputs = Schema([ColSpec("string", TEXT_COLUMN, required=False), ColSpec("binary", IMAGE_COLUMN, required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embed_dim))]))


def pinned_requirements() -> list[str]:
    """pip requirements of the served model, pinned to the versions installed here.

    Returns:
        ``name==version`` lines (bare names for packages not installed).
    """
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def _weights_file(model: PersonRetrievalModel | Path, scratch: Path) -> tuple[Path, Architecture]:
    """A safetensors file of the model (written to ``scratch`` unless given one) and its architecture."""
    from gadms.train.runs import load_any_model

    if isinstance(model, PersonRetrievalModel):
        return save_model(model, scratch / "model.safetensors"), model.arch
    path = Path(model)
    loaded = load_any_model(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path, loaded.arch
    return save_model(loaded, scratch / "model.safetensors"), loaded.arch


def log_retrieval_model(model: PersonRetrievalModel | Path, name: str = "model", registered_model_name: str | None = None) -> ModelInfo:
    """Log a model as a pyfunc in the active run (see the module docstring for what is logged).

    Args:
        model: an in-memory model, or a ``model.safetensors`` / ``checkpoint.pt`` / run directory.
        name: the logged model's name in the run (its artifact path).
        registered_model_name: also register it as a new version of this registered model.

    Returns:
        MLflow's :class:`ModelInfo` (``model_uri`` is ``models:/<model id>``).
    """
    import gadms

    with tempfile.TemporaryDirectory() as scratch:
        weights, arch = _weights_file(model, Path(scratch))
        code = Path(scratch) / "gadms_retrieval_model.py"
        code.write_text(_MODEL_CODE, encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts={WEIGHTS_ARTIFACT: str(weights)},
            code_paths=[str(Path(gadms.__file__).parent)],
            signature=embedding_signature(BACKBONES[arch.backbone].embed_dim),
            input_example=pd.DataFrame({TEXT_COLUMN: [EXAMPLE_CAPTION]}),
            pip_requirements=pinned_requirements(),
            metadata={"gadms_architecture": json.dumps(asdict(arch), sort_keys=True), "output": "L2-normalised embeddings"},
            registered_model_name=registered_model_name,
        )
