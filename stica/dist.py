"""Process helpers: ``torch.distributed`` with single-process fallbacks, the device of this
process, and stop requests by signal.

Processes are launched by ``torchrun`` (one or many nodes, the same command); there is no home-made
launcher. Every helper works unchanged in a plain single process: rank 0 of a world of size 1.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

# torchrun sets all of these; their presence is how we know we were launched by it.
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True when a process group is initialised with more than zero peers."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this node, from torchrun's ``LOCAL_RANK`` (0 when absent)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def device() -> torch.device:
    """This process's device: GPU ``LOCAL_RANK`` (0 outside torchrun) when CUDA is available,
    else the CPU. Every stage runs on it; code that receives tensors uses their device instead."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def is_main_process() -> bool:
    """True on global rank 0: the one process that writes logs, metrics and checkpoints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's rendezvous variables are in the environment."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun's environment variables.

    A no-op (returning False) when the process was not launched by torchrun or a group already
    exists. ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``; with nccl the
    current CUDA device is set to ``LOCAL_RANK`` first, as NCCL requires one device per process.

    Returns:
        True when this call initialised a process group.
    """
    if is_distributed() or not launched_by_torchrun():
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return True


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` from every rank, keeping gradients, concatenated along dim 0.

    The backward pass sends each rank's gradient of its gathered copy back to the rank that owns
    the slice (``torch.distributed.nn``), so a loss that uses other ranks' rows as negatives still
    trains those rows' encoders. Every rank must pass the same shape.

    Shape:
        - x: (B, *)
        - output: (world_size * B, *), rank r's rows at [r * B, (r + 1) * B); ``x`` itself when
          not distributed.
    """
    if not is_distributed() or world_size() == 1:
        return x
    parts = dist_fn.all_gather(x.contiguous())
    return torch.cat([_ContiguousGrad.apply(p) for p in parts], dim=0)


@torch.no_grad()
def gather_detached(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` from every rank without gradients (NCE keys under a stop-gradient).

    Cheaper than :func:`gather_with_grad`: no autograd bookkeeping and no backward exchange.

    Shape:
        - x: (B, *)
        - output: (world_size * B, *), rank r's rows at [r * B, (r + 1) * B); ``x.detach()``
          when not distributed.
    """
    x = x.detach()
    if not is_distributed() or world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    ``torch.distributed.nn``'s all_gather backward exchanges the gathered pieces' gradients with
    gloo's all-to-all, which mis-reads strided tensors: a caller that transposes the gathered
    result (e.g. stacked views (K, B, E) gathered along B) would otherwise get wrong gradients.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over all ranks (a detached copy; for logging metrics, not for gradients)."""
    x = x.detach().clone()
    if not x.is_floating_point():  # an integer mean would truncate
        x = x.double()
    if is_distributed() and world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= world_size()
    return x


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if is_distributed():
        dist.destroy_process_group()


class StopRequested:
    """SIGTERM/SIGINT set a flag; a training loop checks it, checkpoints after the current step
    and exits with ``128 + signal`` (SLURM's pre-emption and Ctrl-C lose no finished step)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextmanager
    def installed(self) -> Iterator[StopRequested]:
        def handler(signum, frame):  # noqa: ARG001
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
