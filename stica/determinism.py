"""Run-to-run determinism: same seed, same machine, same thread count -> same weights.

Two parts:

- :func:`take_rows`, a row lookup whose backward is deterministic. Advanced indexing
  (``x[idx]``) backpropagates with ``index_put_(accumulate=True)``. On CPU, once that gradient has
  at least 32768 elements (ATen's ``GRAIN_SIZE``) and more than one thread runs, the kernel adds
  the rows with parallel atomic adds, so a row hit by several indices is summed in an order set by
  thread scheduling (listed as nondeterministic in ``torch.use_deterministic_algorithms``). At the
  demo's sizes the feature crops' gather and the temporal position embeddings of the cropped maps
  hit it, and two pretraining runs with the same seed drifted apart from the first step
  (``scripts/determinism_bisect.py`` shows it). ``torch.gather``'s backward is a scatter-add in
  which each thread owns its own output columns and walks the indices in order: deterministic on
  CPU at any thread count, and on CUDA under :func:`deterministic_mode`.
- :func:`deterministic_mode`: torch's switches for the ``pretrain.deterministic`` param
  (deterministic algorithms everywhere, deterministic cuDNN without autotuning, a fixed cuBLAS
  workspace), set for the duration of a run and restored afterwards.

What is reproduced bit for bit: a run on the same hardware with the same library versions, the
same number of CPU threads (``torch.get_num_threads()``) and the same number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from stica import perf

# cuBLAS picks reduction orders per stream workspace; a fixed workspace makes them repeatable
# (CUDA's documented setting for deterministic cuBLAS, required by use_deterministic_algorithms).
CUBLAS_WORKSPACE = ":4096:8"


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` (rows of a 2-D table) with a deterministic backward.

    The same values as advanced indexing, bit for bit; the gradient of ``table`` is accumulated by
    ``torch.gather``'s scatter-add instead of the atomic ``index_put_`` (see the module docs), and
    is also faster than it on CPU when many indices hit the same row.

    Shape:
        table (R, D), index (*S) long -> (*S, D)
    """
    dim = table.shape[1]
    rows = index.reshape(-1, 1).expand(-1, dim)  # (N, D): row index repeated along D
    return torch.gather(table, 0, rows).view(*index.shape, dim)


def record(deterministic: bool, device: torch.device) -> dict[str, Any]:
    """What bit-for-bit reproduction depends on beyond params and data, for checkpoints, metrics
    and the resume check."""
    return {
        "deterministic": bool(deterministic),
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
    }


# (getter, setter) of torch.backends.cuda's scaled-dot-product-attention kernels
_FUSED_ATTENTION = (
    ("flash_sdp_enabled", "enable_flash_sdp"),
    ("mem_efficient_sdp_enabled", "enable_mem_efficient_sdp"),
    ("cudnn_sdp_enabled", "enable_cudnn_sdp"),
)


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device | str = "cpu") -> Iterator[None]:
    """torch's deterministic switches while the block runs (``enabled=False`` changes nothing).

    ``use_deterministic_algorithms(True, warn_only=True)`` picks the deterministic kernel wherever
    torch has one and only warns where it has none; cuDNN runs its deterministic algorithms and
    does not autotune (autotuning may pick different algorithms run to run); cuBLAS gets a fixed
    workspace (the variable must be set before the first cuBLAS call of the process, which the
    entry points using this do). On a CUDA ``device`` attention runs the math kernel: the fused
    (flash, memory-efficient, cuDNN) backward kernels only warn under ``warn_only`` and stay
    nondeterministic, and the temporal transformer's few tokens cost nothing either way.
    torch's filling of uninitialised memory stays off: it changes no result and costs a memset
    per allocation.
    """
    if not enabled:
        yield
        return
    cuda = torch.device(device).type == "cuda"
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.utils.deterministic.fill_uninitialized_memory,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        [getattr(torch.backends.cuda, get)() for get, _ in _FUSED_ATTENTION],
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if cuda:
        for _, enable in _FUSED_ATTENTION:
            getattr(torch.backends.cuda, enable)(False)
    try:
        yield
    finally:
        algorithms, warn_only, cudnn_det, cudnn_bench, fill, cublas, attention = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        torch.utils.deterministic.fill_uninitialized_memory = fill
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        for (_, enable), was in zip(_FUSED_ATTENTION, attention, strict=True):
            getattr(torch.backends.cuda, enable)(was)


@contextmanager
def run_mode(deterministic: bool, device: torch.device | str = "cpu") -> Iterator[bool]:
    """A run's ``deterministic`` param: :func:`deterministic_mode` when true, cuDNN autotuning
    on CUDA when false (:func:`stica.perf.cudnn_autotune`); yields whether it autotunes."""
    with (
        deterministic_mode(deterministic, device),
        perf.cudnn_autotune(device, deterministic) as autotune,
    ):
        yield autotune
