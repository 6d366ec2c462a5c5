"""A GDT training checkpoint as facebookresearch/GDT writes it, built without its code.

The key/shape table follows the layout of the official model code: ``model.py`` (``GDT`` with
``video_network.base`` = ``src/vmz.py``'s ``r2plus1d_18`` with ``fc`` = Identity,
``audio_network.base`` = ``src/resnet.py``'s ``resnet9`` with a 1-channel ``conv1`` and its unused
1000-way ``fc``, heads ``mlp_v``/``mlp_a`` = ``MLP.block_forward``), and ``utils.save_checkpoint``
(``model``, ``optimizer``, ``lr_scheduler``, ``epoch``, ``args``), whose warm-up scheduler's
state keeps the wrapped MultiStepLR object (and through it the SGD optimizer).
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import torch

PLANES = (64, 128, 256, 512)


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def video_shapes(prefix: str = "video_network.base") -> dict[str, tuple[int, ...]]:
    """vmz.py's R(2+1)D-18: R2Plus1dStem, then 4 layers of 2 BasicBlocks of Conv2Plus1D."""
    s: dict[str, tuple[int, ...]] = OrderedDict()
    s[f"{prefix}.stem.0.weight"] = (45, 3, 1, 7, 7)
    s.update(_bn(f"{prefix}.stem.1", 45))
    s[f"{prefix}.stem.3.weight"] = (64, 45, 3, 1, 1)
    s.update(_bn(f"{prefix}.stem.4", 64))
    inplanes = 64
    for layer, planes in enumerate(PLANES, start=1):
        for block in range(2):
            p = f"{prefix}.layer{layer}.{block}"
            # one midplanes per block, from the block's in/out planes, shared by both convs
            mid = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
            for conv, cin in (("conv1", inplanes), ("conv2", planes)):
                s[f"{p}.{conv}.0.0.weight"] = (mid, cin, 1, 3, 3)
                s.update(_bn(f"{p}.{conv}.0.1", mid))
                s[f"{p}.{conv}.0.3.weight"] = (planes, mid, 3, 1, 1)
                s.update(_bn(f"{p}.{conv}.1", planes))
            if block == 0 and layer > 1:
                s[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1, 1)
                s.update(_bn(f"{p}.downsample.1", planes))
            inplanes = planes
    return s


def audio_shapes(prefix: str = "audio_network.base") -> dict[str, tuple[int, ...]]:
    """resnet.py's resnet9 (one BasicBlock per layer) with model.py's 1-channel conv1."""
    s: dict[str, tuple[int, ...]] = OrderedDict()
    s[f"{prefix}.conv1.weight"] = (64, 1, 7, 7)
    s.update(_bn(f"{prefix}.bn1", 64))
    inplanes = 64
    for layer, planes in enumerate(PLANES, start=1):
        p = f"{prefix}.layer{layer}.0"
        s[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
        s.update(_bn(f"{p}.bn1", planes))
        s[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
        s.update(_bn(f"{p}.bn2", planes))
        if layer > 1:
            s[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
            s.update(_bn(f"{p}.downsample.1", planes))
        inplanes = planes
    s[f"{prefix}.fc.weight"] = (1000, 512)  # kept by resnet9, never called by its forward
    s[f"{prefix}.fc.bias"] = (1000,)
    return s


def head_shapes(prefix: str, hidden: int = 512, out: int = 256) -> dict[str, tuple[int, ...]]:
    """model.py's MLP(512, 256, n_hidden=512).block_forward: Linear(no bias) 2, BN 4, Linear 8."""
    s: dict[str, tuple[int, ...]] = OrderedDict()
    s[f"{prefix}.block_forward.2.weight"] = (hidden, 512)
    s.update(_bn(f"{prefix}.block_forward.4", hidden))
    s[f"{prefix}.block_forward.8.weight"] = (out, hidden)
    s[f"{prefix}.block_forward.8.bias"] = (out,)
    return s


def official_shapes(use_mlp: bool = True) -> dict[str, tuple[int, ...]]:
    shapes = OrderedDict(video_shapes())
    shapes.update(audio_shapes())
    if use_mlp:
        shapes.update(head_shapes("mlp_v"))
        shapes.update(head_shapes("mlp_a"))
    else:  # GDT without --use_mlp: nn.Linear(512, 256) heads
        for h in ("mlp_v", "mlp_a"):
            shapes[f"{h}.weight"] = (256, 512)
            shapes[f"{h}.bias"] = (256,)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random tensors; BN variances positive, counters int64 like the real ones."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(12345 + len(state), dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.05
    return state


def gdt_args(**changes) -> argparse.Namespace:
    """The args main_gdt.py saves (a few of its ~100, with its K400 script's values)."""
    args = dict(
        model="av_gdt",
        vid_base_arch="r2plus1d_18",
        aud_base_arch="resnet9",
        dataset="kinetics",
        clip_len=30,
        target_fps=30,
        train_crop_size=112,
        aud_sample_rate=24000,
        aud_spec_type=1,
        z_normalize=True,
        use_mlp=True,
        num_sec=1,
        epochs=200,
        lr_milestones="150,175",
        output_dir="/checkpoint/gdt",
        aug_audio=[1, 1, 3, 6],
    )
    args.update(changes)
    return argparse.Namespace(**args)


def write_training_checkpoint(
    path: Path,
    state: dict[str, torch.Tensor],
    args: argparse.Namespace | None = None,
    epoch: int = 200,
    key: str = "model",
) -> Path:
    """Save like GDT's utils.save_checkpoint, with a warm-up scheduler wrapping MultiStepLR."""
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-5)
    sum(p.sum() for p in params).backward()
    optimizer.step()  # momentum buffers in the optimizer state
    after = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[140, 165], gamma=0.1)
    scheduler_state = {  # GradualWarmupScheduler.state_dict(): its __dict__ minus the optimizer
        "multiplier": 64,
        "total_epoch": 10,
        "after_scheduler": after,
        "finished": True,
        "base_lrs": [0.01],
        "last_epoch": epoch,
        "_step_count": epoch + 1,
    }
    payload = {
        key: state,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler_state,
        "epoch": epoch,
        "args": args if args is not None else gdt_args(),
    }
    torch.save(payload, path)
    return path
