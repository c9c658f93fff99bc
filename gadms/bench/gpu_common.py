"""What the parts of ``python -m gadms.bench.gpu`` share: the set-up, the model, a batch and one AMP training step.

The model comes from ``params.full.yaml`` (ViT-B/16 at 384x128, the full recipe's masking, losses and Adam) with
random weights; ``--dry-run-cpu`` swaps in the tiny backbone at 64x32 so every code path runs on a CPU.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from gadms.bench.step import CAPTIONS
from gadms.config import LossConfig, ModelConfig, OptimizerConfig, load_params
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import Mode, StepModule, TrainingStep

FULL_PARAMS = Path(__file__).resolve().parents[2] / "params.full.yaml"
# gadms.train.loop wraps the forward in float16 autocast on CUDA and scales the loss with a GradScaler.
LOOP_AMP_DTYPE = torch.float16


@dataclass(frozen=True)
class Budgets:
    """Seconds each part may take (a part stops its timed loop, or is stopped, once over)."""

    amp: float = 45.0
    ddp: float = 120.0
    throughput_per_mode: float = 60.0
    memory_per_batch: float = 30.0


@dataclass(frozen=True)
class BenchSetup:
    """Everything a part needs; picklable, so the DDP workers receive it whole."""

    label: str  # one line: model, sizes, precision
    device: str  # cuda | cpu
    model_cfg: ModelConfig
    loss_cfg: LossConfig
    optimizer: OptimizerConfig
    mlm_probability: float
    seed: int
    amp_dtype: torch.dtype
    grad_batch: int = 32  # part a
    ddp_batch: int = 32  # part b, per rank
    ddp_steps: int = 3
    ddp_world: int = 1
    throughput_batch: int = 64  # part c
    warmup_steps: int = 5
    timed_steps: int = 20
    memory_batches: tuple[int, ...] = (64, 128)  # part d
    memory_steps: int = 2
    budgets: Budgets = field(default_factory=Budgets)


@dataclass(frozen=True)
class Batch:
    """One synthetic batch: random images, tokenised captions, one identity and dataset index per caption."""

    images: torch.Tensor
    tokens: torch.Tensor
    identities: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def gpu_setup(params_path: Path, gpus: int, batch: int) -> BenchSetup:
    """The GPU set-up: params.full.yaml's model, masking, losses and optimiser, random weights.

    Args:
        params_path: the full recipe's parameter file.
        gpus: CUDA devices present (the DDP world size).
        batch: per-GPU batch of the throughput part.

    Returns:
        The set-up.
    """
    params = load_params(params_path, ["model.pretrained=null"])
    m = params.model
    return BenchSetup(
        label=f"{m.backbone} at {m.image_height}x{m.image_width} from {params_path.name} (random weights), "
        f"float16 autocast + GradScaler as gadms.train.loop",
        device="cuda",
        model_cfg=m,
        loss_cfg=params.loss,
        optimizer=params.train.optimizer,
        mlm_probability=params.finetune.mlm_probability,
        seed=params.seed,
        amp_dtype=LOOP_AMP_DTYPE,
        ddp_world=gpus,
        throughput_batch=batch,
    )


def dry_run_setup(params_path: Path) -> BenchSetup:
    """The CPU dry run: the tiny backbone at 64x32, batch 4, 2 steps (1 for memory), gloo, bfloat16 autocast.

    Args:
        params_path: the full recipe's parameter file (its masking, losses and optimiser are kept).

    Returns:
        The set-up.
    """
    size = ["model.backbone=tiny", "model.image_height=64", "model.image_width=32", "model.context_length=32"]
    params = load_params(params_path, ["model.pretrained=null", *size])
    full = gpu_setup(params_path, 1, 4)
    return replace(
        full,
        label="CPU dry run: tiny backbone at 64x32, batch 4, 2 steps, gloo, bfloat16 autocast "
        "(checks the code paths; the numbers say nothing about a GPU)",
        device="cpu",
        model_cfg=params.model,
        amp_dtype=torch.bfloat16,
        grad_batch=4,
        ddp_batch=4,
        ddp_steps=2,
        ddp_world=2,
        throughput_batch=4,
        warmup_steps=1,
        timed_steps=2,
        memory_batches=(4, 8),
        memory_steps=1,  # Adam's state is there after one step; CPU Adam over the vocabulary matrices is slow
    )


def build_model(setup: BenchSetup, device: torch.device | str | None = None) -> PersonRetrievalModel:
    """The project's model of ``setup.model_cfg`` with random weights (seed 0), built on ``device``.

    Args:
        setup: the set-up.
        device: where to build it; defaults to ``setup.device``.

    Returns:
        The model in train mode.
    """
    torch.manual_seed(0)
    with torch.device(device or setup.device):
        model = PersonRetrievalModel(Architecture.from_config(setup.model_cfg))
    return model.train()


def make_batch(setup: BenchSetup, size: int, rank: int = 0, device: torch.device | str | None = None) -> Batch:
    """A batch of ``size`` random images and real captions; ranks get different images, identities and indices.

    Args:
        setup: the set-up (image size, context length).
        size: batch size.
        rank: the DDP rank (0 outside DDP).
        device: where the tensors go; defaults to ``setup.device``.

    Returns:
        The batch.
    """
    m = setup.model_cfg
    generator = torch.Generator().manual_seed(1000 + rank)
    images = torch.randn(size, 3, m.image_height, m.image_width, generator=generator)
    texts = [CAPTIONS[(i + rank) % len(CAPTIONS)] for i in range(size)]
    tokens = _tokenizer(m.context_length)(texts)
    ids = torch.arange(rank * size, (rank + 1) * size)  # params.full.yaml: each caption its own identity
    where = device or setup.device
    return Batch(images.to(where), tokens.to(where), ids.to(where), ids.to(where))


@functools.lru_cache(maxsize=2)
def _tokenizer(context_length: int) -> Callable[[list[str]], torch.Tensor]:
    """CLIP's tokenizer, built once per context length (it reads the BPE vocabulary)."""
    return tokenizer(context_length)


def make_step(setup: BenchSetup, mode: Mode, seed: int = 0) -> TrainingStep:
    """The project's training step of ``mode`` with the set-up's masking and losses.

    Args:
        setup: the set-up.
        mode: ``gadms`` or ``irra`` (or ``sdm``).
        seed: seeds the mask generator.

    Returns:
        The step.
    """
    return TrainingStep(setup.model_cfg, setup.loss_cfg, mode, setup.mlm_probability, seed=seed)


def make_runner(model: PersonRetrievalModel, step: TrainingStep) -> nn.Module:
    """The step as a module forward, exactly as the training loop (and its DDP wrapper) calls it."""
    return StepModule(model, step)


def make_optimizer(setup: BenchSetup, model: nn.Module) -> torch.optim.Optimizer:
    """Adam with the recipe's settings, as the training loop builds it."""
    o = setup.optimizer
    return torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def make_scaler(setup: BenchSetup, init_scale: float = 2.0**16) -> torch.amp.GradScaler:
    """The loop's GradScaler (on the CPU too in the dry run, to exercise its code path)."""
    return torch.amp.GradScaler(setup.device, init_scale=init_scale)


def train_step(
    runner: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    setup: BenchSetup,
) -> torch.Tensor:
    """One training step as gadms.train.loop runs it: autocast forward, scaled backward, scaler step, zero grads.

    Args:
        runner: the step module (DDP-wrapped or not).
        batch: the batch.
        optimizer: Adam.
        scaler: the GradScaler.
        setup: device type and autocast dtype.

    Returns:
        The (detached) total loss.
    """
    device_type = batch.images.device.type
    with torch.autocast(device_type, dtype=setup.amp_dtype):
        total, _, _ = runner(batch.images, batch.tokens, batch.identities, None, batch.indices, 0)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total.detach()


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def exact_fp32(device: str) -> Iterator[None]:
    """Plain IEEE float32 matmuls and convolutions (no TF32) inside the block; the settings come back after."""
    if device != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv")  # conv: not in the stubs
    saved = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    part: str  # a | b | c | d
    measure: str
    value: float
    unit: str = ""
    note: str = ""


class Deadline:
    """A part's time budget, counted from creation."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return time.monotonic() > self.end
