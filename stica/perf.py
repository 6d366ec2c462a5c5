"""Throughput switches and measurements shared by pretraining, finetuning, feature extraction and
``stica bench train``: the ``auto|on|off`` params, compiling and laying out the video trunk, cuDNN
autotuning, DataLoader settings that keep a GPU fed, and a meter of samples/s, data wait and peak
GPU memory.

Every switch is device-agnostic: ``auto`` turns the GPU-only speed-ups on for CUDA devices and off
on the CPU, where they cost more than they give (torch.compile's inductor needs a C compiler and
about a minute per graph on a 2-core CPU; channels_last_3d convolutions are not faster there).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode

Switch = Literal["auto", "on", "off"]


def resolve(switch: Switch, device: torch.device | str) -> bool:
    """An ``auto|on|off`` param on ``device``: ``auto`` means on for CUDA, off elsewhere."""
    if switch == "auto":
        return torch.device(device).type == "cuda"
    return switch == "on"


# ------------------------------------------------------------------------------------------------
# The video trunk: memory layout, activation checkpointing, compilation
# ------------------------------------------------------------------------------------------------


def set_channels_last(trunk: torch.nn.Module, enabled: bool) -> None:
    """Store the trunk's conv weights as channels_last_3d and feed it channels_last_3d clips
    (cuDNN's fastest 3D conv kernels, with bf16); ``enabled=False`` goes back to contiguous.

    The trunk hands its map on in the default layout, so pooling and crops see the same strides
    either way.
    """
    fmt = torch.channels_last_3d if enabled else torch.contiguous_format
    trunk.to(memory_format=fmt)
    trunk.channels_last = enabled


def compile_trunk(trunk: torch.nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` the trunk in place (``Module.compile``: the state dict keeps its keys, so
    checkpoints are unchanged).

    ``backend="aot_eager"`` traces the same graphs without generating kernels (tests on machines
    where inductor is too slow to compile).
    """
    trunk.compile(backend=backend)


def configure_trunk(
    trunk: torch.nn.Module,
    device: torch.device | str,
    compile: Switch = "off",
    channels_last: Switch = "off",
    activation_checkpointing: bool = False,
    backend: str = "inductor",
) -> dict[str, bool]:
    """Apply the speed params to a video trunk on ``device``; returns what was switched on.

    Activation checkpointing runs the trunk eager: its recomputation must not update BatchNorm's
    running statistics a second time, which a compiled stage cannot be told (``compile: on``
    with it is refused by the config; ``auto`` gives way).
    """
    applied = {
        "compile": resolve(compile, device) and not activation_checkpointing,
        "channels_last": resolve(channels_last, device),
        "activation_checkpointing": bool(activation_checkpointing),
    }
    set_channels_last(trunk, applied["channels_last"])
    trunk.activation_checkpointing = applied["activation_checkpointing"]
    if applied["compile"]:
        compile_trunk(trunk, backend)
    return applied


@contextmanager
def cudnn_autotune(device: torch.device | str, deterministic: bool) -> Iterator[bool]:
    """cuDNN benchmarks the conv algorithms for each new shape and keeps the fastest, on CUDA and
    only when the run is not deterministic (autotuning may pick other algorithms run to run:
    determinism wins). Restored afterwards; yields whether autotuning is on."""
    enabled = torch.device(device).type == "cuda" and not deterministic
    saved = torch.backends.cudnn.benchmark
    if enabled:
        torch.backends.cudnn.benchmark = True
    try:
        yield enabled
    finally:
        torch.backends.cudnn.benchmark = saved


def autocast(
    device: torch.device | str, enabled: bool | None = None
) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device``; ``enabled=None`` means CUDA only (the default everywhere).
    ``enabled=False`` also switches it off inside an enclosing autocast region. On a device type
    without autocast (the meta device of the kernel counts) a disabled one is a no-op."""
    device = torch.device(device)
    if enabled is None:
        enabled = device.type == "cuda"
    if not enabled and not torch.amp.is_autocast_available(device.type):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def loader_options(
    workers: int, device: torch.device | str, prefetch_factor: int = 2
) -> dict[str, Any]:
    """DataLoader keyword arguments that keep the device busy: worker processes that live for the
    whole run (no restart, no reopening of HDF5 shards every epoch), ``prefetch_factor`` batches
    prepared ahead per worker, and page-locked batches for asynchronous copies to a GPU.

    The workers own no randomness (every clip is a function of ``(seed, epoch, index)``), so
    keeping them alive changes no result.
    """
    options: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.device(device).type == "cuda",
    }
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=prefetch_factor)
    return options


# ------------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------------


class Throughput:
    """Samples/s, the fraction of wall time spent waiting for the loader, and peak GPU memory.

    Wrap the loader with :meth:`batches`; the time spent inside its ``next()`` is data wait (the
    training step synchronises with the device every step, so a GPU that is still busy is not
    counted as waiting). A batch's samples are the length of its ``count_key`` entry. Peak
    memory is ``None`` on the CPU.
    """

    # every clip batch has its clips' audio, (B, S), whether its frames are decoded or not
    def __init__(self, device: torch.device | str, count_key: str = "audio") -> None:
        self.device = torch.device(device)
        self.count_key = count_key
        self.samples = 0
        self.steps = 0
        self.wait_s = 0.0
        self.wall_s = 0.0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def batches(self, loader: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, Any]]:
        """Yield ``loader``'s batches, timing the waits (starting the workers included) and the
        wall time until the loop ends or is left."""
        start = time.perf_counter()
        it = None
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    if it is None:
                        it = iter(loader)  # starts the workers unless they persist
                    batch = next(it)
                except StopIteration:
                    return
                finally:
                    self.wait_s += time.perf_counter() - t0
                self.steps += 1
                self.samples += len(batch[self.count_key])
                yield batch
        finally:
            self.wall_s += time.perf_counter() - start

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.wall_s if self.wall_s > 0 else None

    @property
    def data_wait_fraction(self) -> float | None:
        return self.wait_s / self.wall_s if self.wall_s > 0 else None

    def peak_memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "steps": self.steps,
            "wall_seconds": round(self.wall_s, 3),
            "data_wait_seconds": round(self.wait_s, 3),
            "samples_per_s": self.samples_per_s,
            "data_wait_fraction": self.data_wait_fraction,
            "peak_gpu_memory_mb": self.peak_memory_mb(),
        }


# aten ops that only make a new view of their input: no kernel launch on a GPU
_VIEW_OPS = frozenset(
    [
        "view",
        "t",
        "detach",
        "transpose",
        "expand",
        "_unsafe_view",
        "slice",
        "unsqueeze",
        "squeeze",
        "permute",
        "split",
        "split_with_sizes",
        "select",
        "alias",
        "as_strided",
        "unbind",
        "reshape",
    ]
)


class DeviceOpCounter(TorchDispatchMode):
    """Counts the aten ops that touch a tensor on ``device`` and are not views: the kernels a GPU
    would launch. Run the code on the "meta" device (shapes only, no arithmetic) to count a GPU
    path on a machine without one; ops on CPU tensors (index arithmetic) are not counted.

    ``tensor_bytes`` adds up the bytes of the device tensors each counted op takes and returns
    (an in-place op's tensor twice, a broadcast one at its stored size; allocations touch none):
    a proxy for the memory traffic that a bandwidth-bound path (elementwise image work) pays for.
    """

    def __init__(self, device: str = "meta") -> None:
        super().__init__()
        self.device = torch.device(device).type
        self.count = 0
        # copies from the CPU to the device without non_blocking: on a GPU each one is a stream
        # sync, the CPU waits for all queued kernels before launching more
        self.blocking_copies = 0
        self.tensor_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        if name in ("_to_copy", "copy_"):
            source = args[1] if name == "copy_" else args[0]  # copy_(self, src, non_blocking)
            non_blocking = kwargs.get("non_blocking", False) or (len(args) > 2 and bool(args[2]))
            if source.device.type == "cpu" and out.device.type == self.device and not non_blocking:
                self.blocking_copies += 1
        leaves = torch.utils._pytree.tree_leaves((args, kwargs, out))
        on_device = any(
            isinstance(x, torch.Tensor) and x.device.type == self.device for x in leaves
        )
        if on_device and name not in _VIEW_OPS:
            self.count += 1
            if not name.startswith("empty"):  # an allocation touches no bytes
                self.tensor_bytes += sum(
                    _stored_bytes(x)
                    for x in leaves
                    if isinstance(x, torch.Tensor) and x.device.type == self.device
                )
        return out


def _stored_bytes(x: torch.Tensor) -> int:
    """Bytes of the elements a tensor stores (a broadcast dimension, stride 0, counts once)."""
    stored = 1
    for size, stride in zip(x.shape, x.stride(), strict=True):
        stored *= size if stride else 1
    return stored * x.element_size()
