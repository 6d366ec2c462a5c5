"""Finetuning: the paper schedule, end to end through the CLI on a tiny real store, bad inputs."""

import dataclasses
import json
import signal

import pytest
import torch
from click.testing import CliRunner

from stica.cli import cli, main
from stica.config import ConfigError, FinetuneConfig, load_section
from stica.data.encode import write_mp4
from stica.data.store import Store
from stica.dist import StopRequested
from stica.errors import SticaError
from stica.eval.finetune import prepare_eval, run_finetune
from stica.eval.metrics import provenance_path
from stica.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stica.train.finetune import finetune_lr, labelled_subset, prepare, split_data, train_split
from tests.conftest import REPO_ROOT
from tests.fixtures import moving_frames, tone

CLASSES = ("left", "right", "still")
TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 1

# a tiny pretrain architecture: 4-frame 16-px clips through a 4-wide small trunk
TINY_PRETRAIN = """pretrain:
  mode: default
  epochs: 1
  batch_size: 4
  num_frames: 4
  workers: 0
  model: {{width: 4, pooling: {pooling}, transformer_heads: 2, head_hidden: 8, embed_dim: 8}}
  augment: {{crop_size: 16, small_crop_size: 8, eval_short_side: 16}}
finetune:
  epochs: 3
  batch_size: 4
  optimizer: sgd
  lr: 0.02
  warmup_lr: 0.0025
  warmup_epochs: 1.0
  milestones: [2]
  eval_clips: 2
  eval_batch_size: 4
  test_from_epoch: 2
  train_clips_per_video: 1
  labelled_per_class: 0
  workers: 0
"""


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def _write_videos(root, labelled=True):
    for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            for i in range(n):
                frames = moving_frames(12, 24, 32, seed=c * 10 + i)
                if name == "left":
                    frames = frames[:, :, ::-1].copy()
                elif name == "still":
                    frames[:] = frames[:1]
                folder = root / split / name if labelled else root
                write_mp4(folder / f"{split}_{name}{i}.mp4", frames, tone(0.4, freq=300 + 90 * c))
    return root


def _preprocess(videos, store):
    result = _invoke(
        ["preprocess", videos, "--out", store, "--workers", "0", "--no-progress"]
        + ["--set", "short_side=24"]
    )
    assert result.exit_code == 0, result.output
    return store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A labelled store, params, and real pretrain checkpoints (avg and transformer pooling)."""
    root = tmp_path_factory.mktemp("finetune")
    store = _preprocess(_write_videos(root / "videos"), root / "store")
    ckpts = {}
    for pooling in ("avg", "transformer"):
        params = root / f"params-{pooling}.yaml"
        params.write_text(TINY_PRETRAIN.format(pooling=pooling))
        ckpt = root / f"pretrain-{pooling}.pt"
        result = _invoke(["pretrain", store, "--out", ckpt, "--params", params])
        assert result.exit_code == 0, result.output
        ckpts[pooling] = (ckpt, params)
    return {"root": root, "store": store, "ckpts": ckpts}


def test_schedule_follows_the_paper():
    cfg = load_section("finetune", REPO_ROOT / "profiles" / "paper.yaml")
    steps = 10  # per epoch
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: finetune_lr(cfg, s, steps) / cfg.lr)
    lrs = []
    for _ in range(cfg.epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    at = {e: lrs[e * steps] for e in range(cfg.epochs)}
    assert at[0] == pytest.approx(0.0025)
    assert at[1] == pytest.approx((0.0025 + 0.02) / 2)
    assert at[2] == pytest.approx(0.02) and at[5] == pytest.approx(0.02)
    assert at[6] == pytest.approx(0.02 * 0.05) and at[9] == pytest.approx(0.02 * 0.05)
    assert at[10] == pytest.approx(0.02 * 0.0025) and at[11] == pytest.approx(0.02 * 0.0025)
    assert all(a <= b for a, b in zip(lrs[: 2 * steps], lrs[1 : 2 * steps + 1], strict=True))


def test_backbone_trains_at_a_tenth_of_the_classifier_lr():
    from stica.config import ModelConfig
    from stica.models.classifier import FinetuneModel
    from stica.models.stica import SticaModel

    model = FinetuneModel(SticaModel(ModelConfig(width=4, head_hidden=8, embed_dim=8)), 5, 0.0)
    classifier, backbone = model.param_groups(0.02, 0.1)
    assert classifier["lr"] == 0.02 and backbone["lr"] == pytest.approx(0.002)
    grouped = [id(p) for g in (classifier, backbone) for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once
    assert {id(p) for p in model.classifier.parameters()} == {id(p) for p in classifier["params"]}


def test_finetune_augmentation_takes_its_own_crop_and_jitter():
    from stica.config import AugmentConfig
    from stica.train.finetune import finetune_augment

    pre = AugmentConfig(crop_size=112, eval_short_side=128, jitter_p=0.8, grayscale_p=0.2)
    paper = FinetuneConfig(color_jitter=True, crop_size=128, eval_short_side=128)
    aug = finetune_augment(pre, paper)
    assert (aug.crop_size, aug.eval_short_side, aug.jitter_p) == (128, 128, 0.8)
    assert aug.grayscale_p == 0.0 and aug.blur_p == 0.0
    plain = finetune_augment(pre, FinetuneConfig(color_jitter=False))
    assert (plain.crop_size, plain.eval_short_side, plain.jitter_p) == (112, 128, 0.0)


def test_finetune_crop_scale_is_its_own_or_the_pretraining_one():
    from stica.config import AugmentConfig
    from stica.train.finetune import finetune_augment

    pre = AugmentConfig(scale=(0.14, 1.0))
    assert finetune_augment(pre, FinetuneConfig(crop_scale=(0.0, 0.0))).scale == (0.14, 1.0)
    assert finetune_augment(pre, FinetuneConfig(crop_scale=(0.6, 1.0))).scale == (0.6, 1.0)
    with pytest.raises(ConfigError, match="finetune.crop_scale"):
        FinetuneConfig(crop_scale=(0.0, 1.0))


def _curves(live, prefix):
    """{metric: [(epoch, value), ...]} of one split and initialisation in a live log."""
    out = {}
    for path in sorted((live / "plots" / "metrics" / prefix).glob("*.tsv")):
        rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
        out[path.stem] = [(int(step), float(value)) for step, value in rows]
    return out


@pytest.fixture(scope="module")
def finetuned(tiny, tmp_path_factory):
    """One `stica finetune` run (pretrained + random-init baseline) through the CLI."""
    tmp_path = tmp_path_factory.mktemp("finetuned")
    ckpt, params = tiny["ckpts"]["avg"]
    out, metrics = tmp_path / "models" / "finetune", tmp_path / "metrics" / "finetune.json"
    plots, hist = tmp_path / "plots", tmp_path / "dvclive" / "finetune"
    args = ["finetune", tiny["store"], "--ckpt", ckpt, "--out", out, "--metrics", metrics]
    args += ["--plots-dir", plots, "--live", hist, "--params", params]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    return {
        "tmp": tmp_path,
        "out": out,
        "metrics": metrics,
        "plots": plots,
        "hist": hist,
        "args": args,
        "params": params,
    }


def test_finetune_end_to_end(tiny, finetuned):
    tmp_path, out, metrics = finetuned["tmp"], finetuned["out"], finetuned["metrics"]
    plots, hist, args, params = (finetuned[k] for k in ("plots", "hist", "args", "params"))
    m = json.loads(provenance_path(metrics).read_text())
    assert json.loads(metrics.read_text()) == {
        "top1": m["mean"]["video_top1"],
        "top1_best_test_epoch": m["best_test_epoch"]["mean"]["video_top1"],
        "seconds": m["seconds"],
    }
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5"):
        for block in (m["mean"][key], m["splits"]["split1"][key]):
            assert 0.0 <= block["pretrained"] <= 1.0 and 0.0 <= block["random_init"] <= 1.0
    # 3 classes: top-5 is top-3, always a hit
    assert m["mean"]["video_top5"]["pretrained"] == 1.0
    n_test = len(CLASSES) * TEST_PER_CLASS
    # every test video scored on 2 clips x 3 crops
    assert m["eval"]["split1"] == {
        "test_videos": n_test,
        "train_videos": len(CLASSES) * TRAIN_PER_CLASS,
        "views": n_test * 2 * 3,
        "views_per_video": 6,
    }
    assert m["pooling"] == "avg" and m["num_classes"] == len(CLASSES)
    assert m["reproducibility"] == {
        "deterministic": True,
        "cpu_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    assert m["manifest_hash"] == Store(tiny["store"]).manifest_hash()
    assert m["environment"]["versions"]["torch"]

    payload = load_checkpoint(out / "split1.pt", kind="finetune")
    assert payload["split"] == 1 and payload["classes"] == list(CLASSES)
    assert payload["model"]["classifier.weight"].shape[0] == len(CLASSES)
    assert payload["manifest_hash"] == m["manifest_hash"] and payload["versions"]["torch"]
    assert (out / "split1-random.pt").exists()
    assert (plots / "confusion_split1.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "models" / "finetune.log").exists()
    assert not (tmp_path / "models" / ".finetune.resume").exists()

    # the live log: one series per split, initialisation and metric, the epoch as its step
    for init in ("pretrained", "random_init"):
        curves = _curves(hist, f"split1/{init}")
        assert set(curves) == {
            "lr",
            "train_loss",
            "train_acc",
            "test_video_top1",
            "test_video_top5",
        }
        assert [e for e, _ in curves["train_loss"]] == [1, 2, 3]
    curves = _curves(hist, "split1/pretrained")
    assert curves["lr"][0][1] == pytest.approx(0.0025) and curves["lr"][1][1] == 0.02
    # the per-epoch test curve from test_from_epoch (2) on; the last epoch is the reported number
    assert [e for e, _ in curves["test_video_top1"]] == [2, 3]
    final = m["splits"]["split1"]["video_top1"]["pretrained"]
    assert curves["test_video_top1"][-1][1] == pytest.approx(final)
    best = m["best_test_epoch"]["splits"]["split1"]["pretrained"]
    assert best["epoch"] in (2, 3)
    assert best["video_top1"] == pytest.approx(max(v for _, v in curves["test_video_top1"]))
    assert best["video_top1"] >= final and "test set" in m["best_test_epoch"]["note"]
    live = json.loads((hist / "metrics.json").read_text())
    assert live["split1"]["random_init"]["test_video_top1"] == pytest.approx(
        m["splits"]["split1"]["video_top1"]["random_init"]
    )

    # a rerun with the same params reuses the finished split (same checkpoint bytes, same metrics)
    before = (out / "split1.pt").stat().st_mtime_ns
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert (out / "split1.pt").stat().st_mtime_ns == before
    assert json.loads(provenance_path(metrics).read_text())["splits"] == m["splits"]

    # evaluation only, on the split it was trained on: the same video scores as in training
    ev = tmp_path / "eval.json"
    result = _invoke(
        ["finetune", tiny["store"], "--ckpt", out / "split1.pt", "--eval-only", "--split", 1]
        + ["--metrics", ev, "--params", params]
    )
    assert result.exit_code == 0, result.output
    e = json.loads(provenance_path(ev).read_text())
    assert e["metrics"]["video_top1"] == pytest.approx(
        m["splits"]["split1"]["video_top1"]["pretrained"]
    )
    assert e["eval"]["views"] == n_test * 6


def test_scoring_runs_in_torchs_deterministic_mode_unless_told_not_to(
    finetuned, tiny, tmp_path, monkeypatch
):
    """``finetune.deterministic`` (default true) holds torch's deterministic switches while a
    checkpoint is scored, and restores them after; false leaves them off."""
    from stica.eval import finetune as ft

    seen = []
    score = ft.evaluate_test

    def spying(*args):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return score(*args)

    monkeypatch.setattr(ft, "evaluate_test", spying)
    ckpt = finetuned["out"] / "split1.pt"
    for deterministic in ("true", "false"):
        ev = tmp_path / f"eval-{deterministic}.json"
        result = _invoke(
            ["finetune", tiny["store"], "--ckpt", ckpt, "--eval-only", "--metrics", ev]
            + ["--params", finetuned["params"], "--set", f"deterministic={deterministic}"]
        )
        assert result.exit_code == 0, result.output
        e = json.loads(provenance_path(ev).read_text())
        assert e["reproducibility"]["deterministic"] is (deterministic == "true")
    assert seen == [True, False] and not torch.are_deterministic_algorithms_enabled()


def test_eval_only_on_another_split_is_refused(finetuned, tiny, tmp_path, capsys):
    """Through the real entry point `stica.cli.main`: one line on stderr, exit 2, nothing written."""
    metrics = tmp_path / "eval.json"
    args = ["finetune", str(tiny["store"]), "--eval-only", "--split", "2"]
    args += ["--ckpt", str(finetuned["out"] / "split1.pt"), "--metrics", str(metrics)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "finetuned on split 1" in err
    assert not metrics.exists()


def test_bad_inputs_exit_2_and_write_nothing(tiny, tmp_path):
    ckpt, params = tiny["ckpts"]["avg"]
    unlabelled = _preprocess(_write_videos(tmp_path / "flat", labelled=False), tmp_path / "flat_s")
    assert all(r.label == -1 for r in Store(unlabelled))
    foreign = save_checkpoint(tmp_path / "foreign.pt", {"kind": "features", "model": {}})
    other_arch = tmp_path / "other.pt"
    payload = load_checkpoint(ckpt, kind="pretrain")
    payload["model"] = {k: v for k, v in payload["model"].items() if "video_trunk" not in k}
    save_checkpoint(other_arch, payload)
    out = tmp_path / "out"
    cases = [
        ([unlabelled, "--ckpt", ckpt], "no labelled videos"),
        ([tiny["store"], "--ckpt", foreign], "expected 'pretrain'"),
        ([tiny["store"], "--ckpt", other_arch], "weights do not match"),
        ([tiny["store"], "--ckpt", ckpt, "--split", 3], "has no split 3"),
        ([tiny["store"], "--ckpt", ckpt, "--eval-only"], "expected 'finetune'"),
    ]
    for args, message in cases:
        result = _invoke(["finetune", *args, "--out", out, "--params", params])
        assert isinstance(result.exception, SticaError), (args, result.output)
        assert message in str(result.exception)
        assert not out.exists() and not (tmp_path / "out.log").exists()
    with pytest.raises(CheckpointError):
        prepare_eval(tiny["store"], ckpt, None)


def test_labelled_subset_keeps_per_class_train_videos_and_every_test_video(tiny):
    data = split_data(Store(tiny["store"]), 1)
    assert len(data.train) == TRAIN_PER_CLASS * len(CLASSES)
    subsets = [labelled_subset(data, 2, seed) for seed in range(6)]
    for sub in subsets:
        labels = [r.label for r in sub.train]
        assert sorted(labels) == sorted(list(range(len(CLASSES))) * 2)
        assert {r.id for r in sub.train} <= {r.id for r in data.train}
        assert sub.test == data.test
    assert len({tuple(r.id for r in sub.train) for sub in subsets}) > 1  # drawn by the seed
    assert labelled_subset(data, 2, 3).train == subsets[3].train  # and only by it
    assert labelled_subset(data, 0, 0) is data
    assert labelled_subset(data, 99, 0).train == data.train  # fewer than asked: all of them
    ckpt, params = tiny["ckpts"]["avg"]
    config = dataclasses.replace(load_section("finetune", params), labelled_per_class=1)
    plan = prepare(config, tiny["store"], ckpt)
    assert len(plan.splits[0].train) == len(CLASSES)


def test_transformer_pooling_is_kept_with_its_weights(tiny):
    ckpt, params = tiny["ckpts"]["transformer"]
    cfg = load_section("finetune", params)
    plan = prepare(cfg, tiny["store"], ckpt)
    pre = load_checkpoint(ckpt, kind="pretrain")["model"]
    encoder = plan.inits[0].encoder
    from stica.models.classifier import FinetuneModel
    from stica.models.pooling import OfficialTransformerPool

    model = FinetuneModel(encoder, len(CLASSES), cfg.dropout)
    assert isinstance(model.pool, OfficialTransformerPool)
    own = model.state_dict()
    pool_keys = [k for k in pre if k.startswith("video_pool.")]
    assert pool_keys and any("layers.1.attention" in k for k in pool_keys)
    for k in pool_keys:
        assert torch.equal(own["pool." + k.removeprefix("video_pool.")], pre[k]), k
    for k in (k for k in pre if k.startswith("video_trunk.")):
        assert torch.equal(own["trunk." + k.removeprefix("video_trunk.")], pre[k]), k
    # the pretraining heads are dropped; the random baseline differs from the pretrained trunk
    assert not any("head" in k for k in own)
    rand = plan.inits[1].encoder.state_dict()
    key = "video_pool.layers.0.attention.q.weight"
    assert not torch.equal(rand[key], pre[key])


def test_two_official_splits_and_their_mean(tiny, tmp_path):
    """UCF-101 layout with 2 official splits: per-split results, mean over splits, one
    checkpoint per split that records its split."""
    from tests.fixtures import make_ucf101

    store = _preprocess(make_ucf101(tmp_path / "ucf"), tmp_path / "store")
    assert Store(store).meta.num_splits == 2
    ckpt, params = tiny["ckpts"]["avg"]
    cfg = load_section("finetune", params, ["epochs=1", "baseline=false", "eval_clips=1"])
    plan = prepare(cfg, store, ckpt, splits=(1, 2))
    m = run_finetune(plan, tmp_path / "ft")
    assert list(m["splits"]) == ["split1", "split2"]
    for key in ("clip_top1", "video_top1"):
        per = [m["splits"][s][key]["pretrained"] for s in ("split1", "split2")]
        assert m["mean"][key]["pretrained"] == pytest.approx(sum(per) / 2)
        assert "random_init" not in m["mean"][key]
    for split in (1, 2):
        assert load_checkpoint(tmp_path / "ft" / f"split{split}.pt", "finetune")["split"] == split
    assert m["eval"]["split2"]["views"] == 2 * 1 * 3  # 2 test videos x 1 clip x 3 crops


class _StopAfter(StopRequested):
    """A stop request (as SIGTERM sets it) arriving after ``steps`` optimisation steps."""

    def __init__(self, steps):
        super().__init__()
        self.left = steps

    def __bool__(self):
        self.left -= 1
        if self.left < 0:
            self.signal = signal.SIGTERM
        return super().__bool__()


def test_interrupted_split_resumes_exactly(tiny, tmp_path):
    ckpt, params = tiny["ckpts"]["avg"]
    cfg = load_section("finetune", params, ["epochs=2", "baseline=false"])
    plan = prepare(cfg, tiny["store"], ckpt)
    data, init = plan.splits[0], plan.inits[0]
    fp = {"test": 1}
    full, _ = train_split(
        plan, data, init, tmp_path / "a.state", fp, torch.device("cpu"), StopRequested()
    )
    with pytest.raises(SystemExit):  # stopped in the middle of epoch 2: epoch 1's state is kept
        train_split(plan, data, init, tmp_path / "b.state", fp, torch.device("cpu"), _StopAfter(3))
    assert load_checkpoint(tmp_path / "b.state", "finetune-state")["epoch"] == 1
    resumed, history = train_split(
        plan, data, init, tmp_path / "b.state", fp, torch.device("cpu"), StopRequested()
    )
    assert [row["epoch"] for row in history] == [1, 2]
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_workers_and_device_decoding_give_the_in_process_weights_and_scores(tiny, tmp_path):
    """Issue 9: one loader per split whose worker persists across epochs (the sampler moves),
    evaluation's pinned loader, and frames shipped as JPEG files and decoded in the main process
    (``jpeg_decode: device``; on the CPU torchvision and PIL are both libjpeg-turbo) change no
    weight and no score."""
    from stica.eval.finetune import evaluate_test

    ckpt, params = tiny["ckpts"]["avg"]
    results = []
    for workers, decode in ((0, "cpu"), (1, "cpu"), (1, "device")):
        overrides = ["epochs=2", "baseline=false", f"workers={workers}", f"jpeg_decode={decode}"]
        cfg = load_section("finetune", params, [*overrides, "eval_clips=2", "eval_batch_size=4"])
        plan = prepare(cfg, tiny["store"], ckpt)
        data, init = plan.splits[0], plan.inits[0]
        model, history = train_split(
            plan,
            data,
            init,
            tmp_path / f"{workers}{decode}.state",
            {},
            torch.device("cpu"),
            StopRequested(),
        )
        scores = evaluate_test(model, plan, data.test, cfg)
        results.append((model.state_dict(), history, scores))
    weights_a, history_a, scores_a = results[0]
    for weights_b, history_b, scores_b in results[1:]:
        assert [r["train_loss"] for r in history_a] == [r["train_loss"] for r in history_b]
        for key, value in weights_a.items():
            assert torch.equal(weights_b[key], value), key
        assert scores_a["metrics"] == scores_b["metrics"]
        assert scores_a["views"] == scores_b["views"] == 2 * 3 * len(data.test)
        assert (scores_a["scores"] == scores_b["scores"]).all()
