"""The retrieval model as an MLflow pyfunc: text or images in, L2-normalised embeddings out.

``mlflow.pyfunc.load_model(uri).predict(df)`` takes a pandas DataFrame with
a ``text`` column, an ``image`` column, or both (both are optional in the
signature); each row sets exactly one of them:

- ``text``: a caption (string) -> its text embedding;
- ``image``: an encoded image (JPEG or PNG bytes; a base64 string is accepted
  too, which is how a REST client sends binary columns) -> its image embedding.

In process, a frame may mix caption rows and image rows (the other column
null); a row with both or neither is refused (:class:`InputError`, HTTP 400
over REST). Over REST (``gadms serve-model``, which runs ``mlflow models
serve``; ``POST /invocations``) send one column per request, e.g.
``{"dataframe_split": {"columns": ["text"], "data": [["a man in red"]]}}`` or
``{"dataframe_split": {"columns": ["image"], "data": [["<base64 JPEG>"]]}}``:
MLflow's server decodes every cell of a binary column as base64, so a null
image cell next to a caption fails there before the model sees it. The
logged model's metadata (``input``) says the same.

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
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema, TensorSpec

from gadms.devices import resolve_device
from gadms.model.backbone import BACKBONES
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model

WEIGHTS_ARTIFACT = "model"
TEXT_COLUMN = "text"
IMAGE_COLUMN = "image"
INPUT_CONTRACT = (
    "each row sets exactly one of the columns 'text' (a caption) or 'image' (JPEG/PNG bytes, base64 over REST); "
    "over REST send one of the two columns per request"
)
EXAMPLE_CAPTION = "A woman in a red coat and black trousers carrying a white bag."
REQUIREMENTS = (
    "mlflow",
    "torch",
    "torchvision",
    "open_clip_torch",
    "safetensors",
    "pillow",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "tqdm",
)
_MODEL_CODE = (
    "# Builds the gadms retrieval pyfunc (MLflow models-from-code).\n"
    "from mlflow.models import set_model\n"
    "from gadms.tracking.pyfunc import RetrievalPyfunc\n\n"
    "set_model(RetrievalPyfunc())\n"
)


class InputError(MlflowException, ValueError):
    """A request the model cannot embed; MLflow's model server answers it with HTTP 400 and this message.

    A ``ValueError`` in process; an :class:`MlflowException` (``INVALID_PARAMETER_VALUE``) so that
    ``mlflow models serve`` returns the message itself instead of "an unexpected error" and a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class RetrievalPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """Embeds captions or images with a :class:`PersonRetrievalModel` loaded from its safetensors artifact."""

    def load_context(self, context) -> None:
        """Load the weights onto the configured device.

        Args:
            context: MLflow's context; ``context.artifacts["model"]`` is the safetensors file;
                ``context.model_config["device"]`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; set with
                ``mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})``) picks the device,
                ``auto`` (default) meaning CUDA when available.
        """

        from gadms.model.retrieval import load_model

        device = str((context.model_config or {}).get("device", "auto"))
        self.device = resolve_device(device, 'model_config["device"]')
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
        InputError: (a ValueError) a string that is not base64, or another type.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("image column: a string cell must be base64-encoded image bytes") from None
    raise InputError(f"image column: expected bytes or a base64 string, got {type(value).__name__}")


def embed_frame(model: PersonRetrievalModel, frame: pd.DataFrame, device: str = "cpu") -> np.ndarray:
    """Embed each row's ``text`` or ``image`` (the pyfunc's ``predict``).

    Args:
        model: the model, on ``device``.
        frame: a ``text`` and/or an ``image`` column; each row sets exactly one of them.
        device: where to encode.

    Returns:
        ``(rows, embed_dim)`` float32 L2-normalised embeddings, in row order.

    Raises:
        InputError: (a ValueError) neither column, or a row with both or neither value.
    """
    from gadms.eval.evaluate import encode_images, encode_texts

    if TEXT_COLUMN not in frame.columns and IMAGE_COLUMN not in frame.columns:
        raise InputError(
            f"input needs exactly one of the columns 'text' or 'image' per row, got columns {list(frame.columns)}"
        )
    texts, images = _column_cells(frame, TEXT_COLUMN), _column_cells(frame, IMAGE_COLUMN)
    for row, (text, image) in enumerate(zip(texts, images)):
        if (text is None) == (image is None):
            raise InputError(
                f"row {row}: set exactly one of the columns 'text' or 'image' (got "
                f"{'both' if text is not None else 'neither'}): send one of them per row, a caption in 'text' or "
                "an image in 'image'; over REST send one column per request"
            )
    out = np.zeros((len(frame), BACKBONES[model.arch.backbone].embed_dim), dtype=np.float32)
    text_rows = [i for i, t in enumerate(texts) if t is not None]
    image_rows = [i for i, v in enumerate(images) if v is not None]
    if text_rows:
        out[text_rows] = encode_texts(model, [str(texts[i]) for i in text_rows], device=device).numpy()
    if image_rows:
        out[image_rows] = encode_images(model, [image_bytes(images[i]) for i in image_rows], device=device).numpy()
    return out


def _column_cells(frame: pd.DataFrame, column: str) -> list[Any]:
    """The column's cells with missing values (absent column, None, NaN) as None."""
    if column not in frame.columns:
        return [None] * len(frame)
    return [
        None if value is None or (isinstance(value, float) and np.isnan(value)) else value for value in frame[column]
    ]


def embedding_signature(embed_dim: int) -> ModelSignature:
    """The pyfunc's signature: optional ``text`` and ``image`` columns in, ``(-1, embed_dim)`` float32 out.

    ``text`` is a string column, ``image`` a binary one.

    Both columns are optional because a request may carry either or both; each row sets exactly one
    (see :func:`embed_frame`).

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
    from gadms.train.recipes import load_any_model

    if isinstance(model, PersonRetrievalModel):
        return save_model(model, scratch / "model.safetensors"), model.arch
    path = Path(model)
    loaded = load_any_model(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path, loaded.arch
    return save_model(loaded, scratch / "model.safetensors"), loaded.arch


def log_retrieval_model(
    model: PersonRetrievalModel | Path, name: str = "model", registered_model_name: str | None = None
) -> ModelInfo:
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
            metadata={
                "gadms_architecture": arch.to_json(),
                "output": "L2-normalised embeddings",
                "input": INPUT_CONTRACT,
            },
            registered_model_name=registered_model_name,
        )
