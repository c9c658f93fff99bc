"""Parts (a), (c) and (d) of ``python -m gadms.bench.gpu``: AMP gradients, step throughput, peak memory.

Each part builds its own model (random weights, seed 0) and returns rows of the final table; the DDP part (b)
lives in :mod:`gadms.bench.gpu_ddp`.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from gadms.bench.gpu_common import (
    Batch,
    BenchSetup,
    Deadline,
    Row,
    build_model,
    exact_fp32,
    make_batch,
    make_optimizer,
    make_runner,
    make_scaler,
    make_step,
    synchronize,
    train_step,
)
from gadms.model.gass import valid_token_mask
from gadms.model.retrieval import PersonRetrievalModel

MAX_BACKOFFS = 16  # halvings of the loss scale tried before part (a) gives up on an overflowing AMP pass
MAX_SKIPPED = 4  # extra steps part (d) runs while the GradScaler skips every step (no Adam state yet)


@dataclass
class _Pass:
    """One GA-DMS forward and backward: its loss, every parameter's gradient, the masks it drew, its loss scale."""

    loss: float
    grads: dict[str, torch.Tensor]
    masks: tuple[torch.Tensor | None, torch.Tensor | None]
    scale: float


def _gradients(
    model: PersonRetrievalModel, setup: BenchSetup, batch: Batch, scaler: torch.amp.GradScaler | None
) -> _Pass:
    """Gradients of one GA-DMS step: plain fp32 (``scaler`` None), or autocast with a scaled, then unscaled, loss.

    Args:
        model: the model (its gradients are overwritten).
        setup: masking, losses, autocast dtype.
        batch: the batch.
        scaler: the GradScaler of the AMP pass.

    Returns:
        The pass; a fresh step seeded alike each time, so both passes draw the same masks.
    """
    step = make_step(setup, "gadms", seed=setup.seed)
    model.zero_grad(set_to_none=True)
    amp = scaler is not None
    with torch.autocast(batch.images.device.type, dtype=setup.amp_dtype, enabled=amp):
        out = step(model, batch.images, batch.tokens, batch.identities, None, batch.indices, 0)
    if scaler is None:
        out.total.backward()
    else:
        scaler.scale(out.total).backward()
        scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.0))  # the loop unscales through its optimiser
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    scale = scaler.get_scale() if scaler is not None else 1.0
    return _Pass(float(out.total.detach()), grads, (out.noise_mask, out.informative_mask), scale)


def _amp_gradients(model: PersonRetrievalModel, setup: BenchSetup, batch: Batch, deadline: Deadline) -> _Pass:
    """The AMP pass at the largest loss scale (from the loop's 2**16, halving) whose gradients are all finite."""
    scale = 2.0**16
    for _ in range(MAX_BACKOFFS):
        result = _gradients(model, setup, batch, make_scaler(setup, scale))
        if bool(torch.stack([torch.isfinite(g).all() for g in result.grads.values()]).all()):
            return result
        if deadline.passed():
            break
        scale /= 2  # what the GradScaler does after a skipped step
    raise RuntimeError(f"AMP gradients are not finite at any loss scale from 2**16 down to {scale:g}")


def _same_masks(a: _Pass, b: _Pass) -> bool:
    """Whether two passes drew the same noise and informative masks."""
    pairs = zip(a.masks, b.masks, strict=True)
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in pairs)


def _gradient_rows(ref: _Pass, amp: _Pass, setup: BenchSetup) -> list[Row]:
    """Rows comparing AMP with fp32 gradients: the worst and median parameter, and all parameters together."""
    shared = [name for name in ref.grads if name in amp.grads]
    if not shared:
        raise RuntimeError("the GA-DMS step left no parameter with a gradient")
    diffs = torch.stack([(amp.grads[n] - ref.grads[n]).double().norm() for n in shared]).cpu()
    norms = torch.stack([ref.grads[n].double().norm() for n in shared]).cpu()
    nonzero = (norms > 0).nonzero().flatten().tolist()
    rel = diffs[nonzero] / norms[nonzero]
    worst = shared[nonzero[int(rel.argmax())]]
    overall = float(diffs.square().sum().sqrt() / norms.square().sum().sqrt())
    lonely = len(set(ref.grads) ^ set(amp.grads))
    masks = "same masks" if _same_masks(ref, amp) else "MASKS DIFFER (not comparable)"
    dtype = str(setup.amp_dtype).removeprefix("torch.")
    how = f"{dtype} autocast + GradScaler (scale {amp.scale:g}) vs IEEE fp32, batch {setup.grad_batch}, {masks}"
    return [
        Row("a", "grad rel. diff AMP vs fp32, worst param", float(rel.max()), "", f"{how}; worst: {worst}"),
        Row("a", "grad rel. diff AMP vs fp32, median param", float(rel.median()), "", f"over {len(nonzero)} params"),
        Row(
            "a",
            "grad rel. diff AMP vs fp32, all params",
            overall,
            "",
            f"||g_amp - g_fp32|| / ||g_fp32|| over all; {lonely} params with a gradient in one pass only",
        ),
        Row("a", "loss rel. diff AMP vs fp32", abs(amp.loss - ref.loss) / max(abs(ref.loss), 1e-12), "", "total loss"),
    ]


def _gass_rows(model: PersonRetrievalModel, setup: BenchSetup, batch: Batch) -> list[Row]:
    """Largest change of a token score (in [0, 1]) when GASS runs under autocast instead of fp32."""
    step = make_step(setup, "gadms", seed=setup.seed)

    def scores(amp: bool) -> torch.Tensor | None:
        with torch.autocast(batch.images.device.type, dtype=setup.amp_dtype, enabled=amp):
            with torch.no_grad():
                features = model.encode_image(batch.images)[0]
            found = step.token_scores(model, batch.tokens, features)
        return None if found is None else found.float()

    with exact_fp32(setup.device):
        ref = scores(False)
    amp = scores(True)
    if ref is None or amp is None:
        return []
    diff = (amp - ref).abs()[valid_token_mask(batch.tokens)]
    note = f"{setup.model_cfg.masking.score} token scores, mean abs diff {float(diff.mean()):.2g}; they set the masks"
    return [Row("a", "token score max abs diff AMP vs fp32", float(diff.max()), "", note)]


def part_amp(setup: BenchSetup) -> list[Row]:
    """(a) One GA-DMS step's gradients under the loop's AMP against plain fp32, same batch, weights and masks.

    Args:
        setup: the set-up.

    Returns:
        Rows: worst, median and overall relative gradient difference, the loss's, the token scores'.
    """
    deadline = Deadline(setup.budgets.amp)
    model = build_model(setup)
    batch = make_batch(setup, setup.grad_batch)
    with exact_fp32(setup.device):
        ref = _gradients(model, setup, batch, None)
    amp = _amp_gradients(model, setup, batch, deadline)
    return _gradient_rows(ref, amp, setup) + _gass_rows(model, setup, batch)


def _samples_per_second(
    model: PersonRetrievalModel, setup: BenchSetup, mode: str, batch: Batch, deadline: Deadline
) -> tuple[float, int]:
    """Training samples per second of one step mode, warm-up excluded, device synchronised around the timing.

    Returns:
        ``(samples/s, timed steps)``.
    """
    runner = make_runner(model, make_step(setup, mode, seed=setup.seed))  # type: ignore[arg-type]
    optimizer, scaler = make_optimizer(setup, model), make_scaler(setup)
    for _ in range(setup.warmup_steps):
        train_step(runner, batch, optimizer, scaler, setup)
    synchronize(setup.device)
    started = time.perf_counter()
    steps = 0
    while steps < setup.timed_steps and (steps < 2 or not deadline.passed()):
        train_step(runner, batch, optimizer, scaler, setup)
        steps += 1
    synchronize(setup.device)
    return steps * len(batch) / (time.perf_counter() - started), steps


def part_throughput(setup: BenchSetup) -> list[Row]:
    """(c) Step throughput of GA-DMS and of the IRRA-style step, and their ratio.

    Both are full training steps (autocast forward, scaled backward, Adam) with the recipe's losses on one
    synthetic batch; they differ in the masks: GASS scores + noise and informative masks vs 15% random masks.

    Args:
        setup: the set-up.

    Returns:
        Rows: samples/s of each mode and GA-DMS / IRRA.
    """
    model = build_model(setup)
    batch = make_batch(setup, setup.throughput_batch)
    rates: dict[str, tuple[float, int]] = {}
    for mode in ("gadms", "irra"):
        deadline = Deadline(setup.budgets.throughput_per_mode)
        rates[mode] = _samples_per_second(model, setup, mode, batch, deadline)
    what = f"batch {len(batch)}, warm-up ({setup.warmup_steps} steps) excluded"
    (gadms, n_gadms), (irra, n_irra) = rates["gadms"], rates["irra"]
    return [
        Row("c", "GA-DMS step throughput", gadms, "samples/s", f"{what}, {n_gadms} timed"),
        Row("c", "IRRA-style step throughput", irra, "samples/s", f"{what}, {n_irra} timed; 15% random MLM masks"),
        Row("c", "GA-DMS / IRRA throughput", gadms / irra, "x", "below 1: GA-DMS is slower (GASS pass + dual masks)"),
    ]


def _peak_mib(device: str) -> tuple[float, str]:
    """Peak memory in MiB and what it is: CUDA allocated since the last reset, or the process's peak RSS."""
    if device == "cuda":
        reserved = torch.cuda.max_memory_reserved() / 2**20
        return torch.cuda.max_memory_allocated() / 2**20, f"torch.cuda.max_memory_allocated; reserved {reserved:.0f}"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return rss, "CPU dry run: the process's peak RSS, not GPU memory"


def part_memory(setup: BenchSetup, size: int) -> list[Row]:
    """(d) Peak memory of GA-DMS training steps at one batch size (weights, gradients, Adam state, activations).

    Args:
        setup: the set-up.
        size: the batch size.

    Returns:
        One row.
    """
    deadline = Deadline(setup.budgets.memory_per_batch)
    if setup.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(setup)
    batch = make_batch(setup, size)
    runner = make_runner(model, make_step(setup, "gadms", seed=setup.seed))
    optimizer, scaler = make_optimizer(setup, model), make_scaler(setup)
    steps = 0
    # Adam's state appears at the first applied step; a step the GradScaler skips (overflow) allocates none
    while (steps < setup.memory_steps or not optimizer.state) and steps < setup.memory_steps + MAX_SKIPPED:
        if steps and deadline.passed():
            break
        train_step(runner, batch, optimizer, scaler, setup)
        steps += 1
    synchronize(setup.device)
    peak, what = _peak_mib(setup.device)
    adam = "with" if optimizer.state else "WITHOUT (every step skipped)"
    note = f"{what}; {steps} steps, {adam} Adam state"
    return [Row("d", f"peak memory, GA-DMS step, batch {size}", peak, "MiB", note)]
