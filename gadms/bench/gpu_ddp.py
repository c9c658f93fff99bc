"""Part (b) of ``python -m gadms.bench.gpu``: a few GA-DMS steps under DDP, then the ranks' weights compared.

One process per GPU (``torch.multiprocessing``, rendezvous on 127.0.0.1), joined through the project's
:func:`gadms.train.distributed.init_distributed` and wrapped as :class:`gadms.train.loop.Trainer` wraps its step:
DDP with ``find_unused_parameters``, features and identities gathered across ranks for SDM. With one GPU the
project would not start a process group, so the worker joins a world of one over NCCL itself. Each rank trains
on its own batch; afterwards every parameter is compared with rank 0's.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from gadms.bench.gpu_common import (
    BenchSetup,
    Row,
    build_model,
    make_batch,
    make_optimizer,
    make_runner,
    make_scaler,
    make_step,
    train_step,
)
from gadms.train import distributed

RESULT = "rank0.json"


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _join(device: str, rank: int, world: int, port: int, seconds: float) -> distributed.DistInfo:
    """Join the process group through the project's torchrun plumbing (a world of one joined here)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world)}
    os.environ.update(env, LOCAL_RANK=str(rank))
    info = distributed.init_distributed(f"cuda:{rank}" if device == "cuda" else "cpu")
    if not dist.is_initialized():  # world size 1: init_distributed only joins a group above one process
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=0, world_size=1, timeout=timedelta(seconds=seconds))
    return info


def _rank_spread(model: torch.nn.Module, device: torch.device) -> float:
    """Largest ``|param - rank 0's param|`` over every parameter and rank (0.0: the ranks agree bit for bit)."""
    worst = torch.zeros((), device=device)
    for param in model.parameters():
        reference = param.detach().clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (param.detach() - reference).abs().max().float())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)


def _train(setup: BenchSetup, info: distributed.DistInfo) -> dict:
    """A few GA-DMS steps on this rank's batch under DDP; what rank 0 reports."""
    model = build_model(setup, info.device)
    step = make_step(setup, "gadms", seed=setup.seed + info.rank)  # as the Trainer seeds each rank
    step.gather, step.gather_ids = distributed.gather_with_grad, distributed.gather_no_grad
    ids = [info.device] if info.device.type == "cuda" else None
    runner = DistributedDataParallel(make_runner(model, step), find_unused_parameters=True, device_ids=ids)
    optimizer, scaler = make_optimizer(setup, model), make_scaler(setup)
    batch = make_batch(setup, setup.ddp_batch, info.rank, info.device)
    initial = [p.detach().clone() for p in model.parameters()]
    applied, losses = 0, []
    for _ in range(setup.ddp_steps):
        before = scaler.get_scale()
        losses.append(float(train_step(runner, batch, optimizer, scaler, setup)))
        applied += int(scaler.get_scale() >= before)  # the scaler lowers its scale when it skips a step
    moved = max(float((p.detach() - p0).abs().max()) for p, p0 in zip(model.parameters(), initial, strict=True))
    return {
        "spread": _rank_spread(model, info.device),
        "moved": moved,
        "applied": applied,
        "losses": losses,
        "backend": dist.get_backend(),
    }


def _worker(rank: int, world: int, port: int, setup: BenchSetup, out_dir: str) -> None:
    """One DDP process: join, train, compare with rank 0; rank 0 writes the result."""
    info = _join(setup.device, rank, world, port, setup.budgets.ddp)
    try:
        result = _train(setup, info)
        if info.is_main:
            Path(out_dir, RESULT).write_text(json.dumps(result))
    finally:
        distributed.cleanup()


def _last_line(text: str) -> str:
    """The last non-empty line of a worker's traceback (its exception and message)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _wait(context: mp.ProcessContext, seconds: float) -> None:
    """Wait for every worker; one-line errors for a failed or timed-out worker (the others are stopped)."""
    end = time.monotonic() + seconds
    while True:
        try:
            if context.join(timeout=1.0):
                return
        except mp.ProcessRaisedException as exc:
            raise RuntimeError(f"rank {exc.error_index} failed: {_last_line(str(exc))}") from None
        except mp.ProcessExitedException as exc:
            raise RuntimeError(f"rank {exc.error_index} exited with code {exc.exit_code}") from None
        if time.monotonic() > end:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            raise TimeoutError(f"DDP workers still running after the part's {seconds:.0f} s budget; stopped")


def part_ddp(setup: BenchSetup) -> list[Row]:
    """(b) GA-DMS steps under DDP over ``setup.ddp_world`` processes; are the weights the same on every rank?

    Args:
        setup: the set-up (device, world size, batch per rank, steps).

    Returns:
        One row: the largest parameter difference between a rank and rank 0 (0 when they agree).
    """
    world = setup.ddp_world
    with tempfile.TemporaryDirectory(prefix="gadms-ddp-") as out_dir:
        args = (world, _free_port(), setup, out_dir)
        context = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
        _wait(context, setup.budgets.ddp)
        result = json.loads(Path(out_dir, RESULT).read_text())
    backend = str(result["backend"]).upper()
    steps = setup.ddp_steps
    note = (
        f"{backend}, world size {world}, batch {setup.ddp_batch}/rank, {result['applied']}/{steps} steps applied, "
        f"weights moved up to {result['moved']:.2g}"
    )
    if world == 1:
        note += f"; one process: world size 1 over {backend}, no other rank to compare with"
    return [Row("b", f"max abs param diff vs rank 0, {steps} DDP steps", result["spread"], "", note)]
