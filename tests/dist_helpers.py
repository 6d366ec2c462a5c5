"""Run a function on N real gloo ranks (torch.multiprocessing, spawn) with a free port and a timeout."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world: int, port: int, args: tuple) -> None:
    # the same variables torchrun sets, so init_distributed() is exercised as in production
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from stica import dist

    assert dist.init_distributed(backend="gloo", timeout_s=60)
    try:
        fn(rank, *args)
    finally:
        dist.cleanup()


def run_ranks(fn: Callable, world: int, *args, timeout_s: float = 120.0) -> None:
    """Run ``fn(rank, *args)`` on ``world`` gloo processes; raise if one fails or time runs out."""
    ctx = mp.start_processes(
        _entry,
        args=(fn, world, free_port(), args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"distributed workers did not finish in {timeout_s} s")
