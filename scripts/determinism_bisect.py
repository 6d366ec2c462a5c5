"""Find order-nondeterministic CPU kernels on the pretraining path.

Each piece of one training step (augmentation, log-mel, trunk layers, feature crops, pooling,
heads, losses, the whole step) runs forward + backward ``--repeats`` times on identical inputs,
parameters and upstream gradients; outputs, input gradients and parameter gradients are compared
bitwise with the first run. Sizes are the committed demo profile's (params.yaml) unless
``--params`` names another file. Run with the default thread count (nondeterminism from thread
scheduling disappears with OMP_NUM_THREADS=1):

    python scripts/determinism_bisect.py [--repeats 5] [--only trunk,crops]

Prints one line per piece: ``ok`` or the tensors that differed (with the largest difference).

Found with torch 2.14.1 on 2 threads (issue 12): the backward of advanced indexing
(``index_put_(accumulate=True)``) in the feature-crop gather and in the position embeddings of
cropped maps ("ours" transformer); both now go through ``stica.determinism.take_rows``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable

import torch
from torch import nn

from stica.config import load_section
from stica.data.audio import build_frontend, volume_jitter
from stica.data.augment import VideoAugment
from stica.models.crops import crop_tokens, embed_crops, sample_crops
from stica.models.stica import build_model

Piece = Callable[[], dict[str, torch.Tensor]]


def fwd_bwd(module: nn.Module | None, fn: Callable, *inputs: torch.Tensor) -> Piece:
    """A piece: ``fn(*inputs)`` forward, backward with a fixed random upstream gradient."""

    def run() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # dropout
        mod = copy.deepcopy(module) if module is not None else None
        xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        out = fn(mod, *xs) if mod is not None else fn(*xs)
        outs = out if isinstance(out, tuple | list) else [out]
        outs = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]
        g = torch.Generator().manual_seed(1)
        grads = [torch.randn(o.shape, generator=g) for o in outs]
        torch.autograd.backward(
            [o for o in outs if o.requires_grad],
            [gr for o, gr in zip(outs, grads, strict=True) if o.requires_grad],
        )
        result = {f"out{i}": o.detach().clone() for i, o in enumerate(outs)}
        result.update(
            {f"grad_in{i}": x.grad.clone() for i, x in enumerate(xs) if x.grad is not None}
        )
        if mod is not None:
            for name, p in mod.named_parameters():
                if p.grad is not None:
                    result[f"grad:{name}"] = p.grad.clone()
            for name, b in mod.named_buffers():
                result[f"buf:{name}"] = b.clone()
        return result

    return run


def compare(name: str, piece: Piece, repeats: int) -> bool:
    first = piece()
    bad: dict[str, float] = {}
    for _ in range(repeats - 1):
        again = piece()
        for k, v in first.items():
            if not torch.equal(v, again[k]):
                diff = (v.double() - again[k].double()).abs().max().item()
                bad[k] = max(bad.get(k, 0.0), diff)
    if bad:
        shown = ", ".join(f"{k} ({d:.1e})" for k, d in list(bad.items())[:6])
        more = f" +{len(bad) - 6} more" if len(bad) > 6 else ""
        print(f"DIFF  {name}: {len(bad)}/{len(first)} tensors differ: {shown}{more}")
    else:
        print(f"ok    {name} ({len(first)} tensors)")
    sys.stdout.flush()
    return not bad


def pieces(params: str) -> dict[str, Piece]:
    cfg = load_section("pretrain", params)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).train()
    b, t, s = cfg.batch_size, cfg.num_frames, cfg.augment.crop_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (b, t, 48, 64, 3), generator=g, dtype=torch.uint8)
    audio = torch.randn(b, cfg.audio.sample_rate * t // 10, generator=g) * 0.1
    video = torch.randn(2 * b, 3, t, s, s, generator=g)  # L1 and L2 share one trunk call
    logmel = build_frontend(cfg.audio)
    augment = VideoAugment(cfg.augment)
    spec = logmel(audio)
    with torch.no_grad():
        fmap = model.video_map(video)  # (2B, D, T1, H1, W1)
    groups = sample_crops(cfg.crops, fmap.shape, fmap.shape[0], torch.Generator().manual_seed(3))

    out: dict[str, Piece] = {
        "augment.two_views": lambda: dict(
            enumerate_out(augment.two_views(frames, torch.Generator().manual_seed(5)))
        ),
        "logmel+volume_jitter": lambda: {
            "spec": logmel(volume_jitter(audio, torch.Generator().manual_seed(5)))
        },
        "video_trunk": fwd_bwd(model.video_trunk, lambda m, x: m(x), video),
        "audio_trunk": fwd_bwd(model.audio_trunk, lambda m, x: m.feature_map(x), spec),
        "video_pool(full map)": fwd_bwd(model.video_pool, lambda m, x: m(x), fmap),
        "video_head": fwd_bwd(model.video_head, lambda m, x: m(x), fmap.mean(dim=(2, 3, 4))),
        "audio_head": fwd_bwd(model.audio_head, lambda m, x: m(x), fmap.mean(dim=(2, 3, 4))),
    }
    for grp in groups:
        out[f"crop_tokens[{grp.name}]"] = fwd_bwd(
            None, lambda x, grp=grp: crop_tokens(x, [grp])[1][grp.name], fmap
        )
        out[f"pool_tokens[{grp.name}]"] = fwd_bwd(
            model.video_pool,
            lambda m, x, grp=grp: m.pool_tokens(
                [(crop_tokens(x, [grp])[1][grp.name], grp.offsets[..., 0].reshape(-1))]
            )[0],
            fmap,
        )
    out[f"loss({cfg.mode})"] = _loss_piece(cfg, model, video, spec)
    out["embed_crops(all groups)"] = fwd_bwd(
        model, lambda m, x: tuple(embed_crops(m.embed_video_tokens, x, groups)[1].values()), fmap
    )
    # every leaf module of the trunks on its real input, to name the kernel
    for trunk_name, trunk, x in (
        ("video", model.video_trunk, video),
        ("audio", model.audio_trunk, spec),
    ):
        inputs: dict[str, torch.Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda m, i, o, n=n, inputs=inputs: _keep(inputs, n, i[0]))
            for n, m in trunk.named_modules()
            if len(list(m.children())) == 0
        ]
        with torch.no_grad():
            trunk(x) if trunk_name == "video" else trunk.feature_map(x)
        for h in hooks:
            h.remove()
        seen: set[str] = set()
        for n, m in trunk.named_modules():
            if n not in inputs:
                continue
            sig = f"{m!r}{tuple(inputs[n].shape)}"
            if sig in seen:
                continue
            seen.add(sig)
            layer = copy.deepcopy(m)
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
            out[f"{trunk_name}.{n} {type(m).__name__}{tuple(inputs[n].shape)}"] = fwd_bwd(
                layer, lambda mm, xx: mm(xx), inputs[n]
            )

    def whole_step() -> dict[str, torch.Tensor]:
        from stica.train.pretrain import StepComputer

        torch.manual_seed(0)  # dropout
        m = copy.deepcopy(model)
        step = StepComputer(cfg, m, torch.device("cpu"))
        losses = step(frames, audio, torch.Generator().manual_seed(11))
        losses["loss"].backward()
        res = {"loss": losses["loss"].detach()}
        res.update(
            {f"grad:{n}": p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        )
        return res

    out["whole step"] = whole_step
    return out


class _FixedOutputs(nn.Module):
    """Stands in for the model in StepComputer: returns fresh leaves of recorded embeddings, so
    the loss runs with exactly the training step's arguments and its input gradients are kept."""

    def __init__(self, outputs: dict) -> None:
        super().__init__()
        self.outputs, self.leaves = outputs, []

    def _leaf(self, x: torch.Tensor) -> torch.Tensor:
        y = x.detach().clone().requires_grad_(True)
        self.leaves.append(y)
        return y

    def forward(self, **_: object) -> dict:
        o = self.outputs
        out = {"video": [self._leaf(v) for v in o["video"]], "audio": self._leaf(o["audio"])}
        if "crops" in o:
            out["crops"] = [{k: self._leaf(v) for k, v in c.items()} for c in o["crops"]]
        return out


def _loss_piece(cfg, model: nn.Module, video: torch.Tensor, spec: torch.Tensor) -> Piece:
    from stica.train.pretrain import StepComputer

    b = video.shape[0] // 2
    feature_crops = cfg.mode == "feature_crops"
    with torch.no_grad():
        recorded = copy.deepcopy(model)(
            videos=[video[:b], video[b:]],
            spec=spec,
            crops=cfg.crops if feature_crops else None,
            generator=torch.Generator().manual_seed(7),
            crop_views=2 if feature_crops else None,
        )
    frames = torch.zeros(b, cfg.num_frames, 48, 64, 3, dtype=torch.uint8)
    audio = torch.zeros(b, cfg.audio.sample_rate)

    def run() -> dict[str, torch.Tensor]:
        fixed = _FixedOutputs(recorded)
        losses = StepComputer(cfg, fixed, torch.device("cpu"))(
            frames, audio, torch.Generator().manual_seed(0)
        )
        losses["loss"].backward()
        res = {"loss": losses["loss"].detach()}
        res.update({f"grad{i}": x.grad for i, x in enumerate(fixed.leaves) if x.grad is not None})
        return res

    return run


def _keep(store: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> None:
    store.setdefault(name, x.detach())  # a forward hook that returns None keeps the output


def enumerate_out(xs) -> list[tuple[str, torch.Tensor]]:
    return [(f"view{i}", x) for i, x in enumerate(xs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated substrings of piece names")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    wanted = [w for w in args.only.split(",") if w]
    ok = True
    for name, piece in pieces(args.params).items():
        if wanted and not any(w in name for w in wanted):
            continue
        ok &= compare(name, piece, args.repeats)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
