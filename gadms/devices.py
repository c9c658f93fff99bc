"""Whether a device named in params.yaml or on the command line exists on this machine.

A command calls :func:`check_device` where it resolves its device, before any work, so ``--device cuda`` on a
machine without a GPU is one line naming the key (``error: --device cuda: ...``), not a CUDA traceback later.
torch is imported only when a check needs it: :mod:`gadms.config` stays importable without it.
"""

from __future__ import annotations

from gadms.config import DEVICE_NAME
from gadms.safe_yaml import shorten


class DeviceError(ValueError):
    """The device cannot be used here; the message is one line naming the key."""


def check_device(value: str, key: str) -> str:
    """Refuse a device this machine lacks.

    Args:
        value: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        key: what set it (``--device``, ``curation.detector.device``), named in the message.

    Returns:
        ``value`` unchanged (``auto`` is resolved by the caller).

    Raises:
        DeviceError: not a device name, or no such device on this machine.
    """
    if not DEVICE_NAME.fullmatch(value):
        raise DeviceError(f"{key} {shorten(value)}: not a device; use auto, cpu, cuda, cuda:N or mps")
    if value.startswith("cuda"):
        _require_cuda(value, key)
    elif value == "mps":
        _require_mps(key)
    return value


def resolve_device(value: str, key: str = "--device") -> str:
    """The device to use: ``auto`` is CUDA when a GPU is visible, else the CPU; any other name is checked by
    :func:`check_device` (a device this machine lacks is one line naming ``key``).
    """
    if value != "auto":
        return check_device(value, key)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _require_cuda(value: str, key: str) -> None:
    """A CUDA device: a GPU must be visible, and ``cuda:N`` within their number."""
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"{key} {value}: no CUDA GPU is available on this machine; use cpu or auto")
    index = int(value.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"{key} {value}: this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}")


def _require_mps(key: str) -> None:
    """Apple's Metal device: only where torch reports it."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise DeviceError(f"{key} mps: Apple's MPS device is not available on this machine; use cpu or auto")
