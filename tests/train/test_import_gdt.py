"""`stica import-gdt`: the official key layout maps onto stica's trunks exactly, loading runs no
code, and a file:// URL is fetched once with its sha256 checked. No download: the GDT checkpoint is
written here with the official key names and shapes (tests/train/gdt_official.py)."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.video import r2plus1d_18

from stica.cli import cli
from stica.config import PretrainConfig
from stica.download import fetch
from stica.errors import SticaError
from stica.eval.metrics import provenance_path
from stica.train.checkpoint import CheckpointError, load_checkpoint, load_pretrained
from stica.train.import_gdt import import_gdt, load_gdt_file, stica_key

from .gdt_official import (
    audio_shapes,
    gdt_args,
    official_shapes,
    random_state,
    video_shapes,
    write_training_checkpoint,
)

HEADS_OFF = ("video_head.*", "audio_head.*")


@pytest.fixture(scope="module")
def official_state():
    return random_state(official_shapes(), seed=0)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, official_state):
    return write_training_checkpoint(
        tmp_path_factory.mktemp("gdt") / "gdt_K400.pth", official_state
    )


@pytest.fixture(scope="module")
def imported(official_file):
    return import_gdt(official_file, PretrainConfig())


def test_every_trunk_tensor_arrives_unchanged(imported, official_state):
    state = imported["model"]
    trunk_keys = [k for k in official_state if k.startswith(("video_network.", "audio_network."))]
    copied = 0
    for key in trunk_keys:
        dst = stica_key(key)
        if key.endswith(("fc.weight", "fc.bias")):
            assert dst is None
            continue
        assert torch.equal(state[dst], official_state[key]), key
        assert state[dst].dtype == official_state[key].dtype
        copied += 1
    # and nothing of the trunks is left at its initialisation
    stica_trunk = [k for k in state if k.startswith(("video_trunk.", "audio_trunk."))]
    assert copied == len(stica_trunk) == len(trunk_keys) - 2
    prov = imported["provenance"]
    assert prov["pretrained"] == dict.fromkeys(
        ("video_trunk", "audio_trunk", "video_head", "audio_head"), True
    )
    assert prov["not_imported"] == {}
    assert set(prov["ignored_keys"]) == {
        "audio_network.base.fc.weight",
        "audio_network.base.fc.bias",
    }
    assert prov["epoch"] == 200 and prov["args_in_file"]


def test_heads_arrive_unchanged(imported, official_state):
    """GDT's MLP.block_forward layers 2, 4, 8 are stica's MLPHead.mlp 1, 2, 5."""
    state = imported["model"]
    heads = [k for k in official_state if k.startswith(("mlp_v.", "mlp_a."))]
    assert len(heads) == 2 * 8
    for key in heads:
        assert torch.equal(state[stica_key(key)], official_state[key]), key
    assert stica_key("mlp_v.block_forward.8.bias") == "video_head.mlp.5.bias"
    assert stica_key("mlp_a.block_forward.4.running_var") == "audio_head.mlp.2.running_var"
    assert imported["params"]["model"]["head_dropout"] == 0.3


def test_config_is_the_gdt_recipe(imported):
    params = imported["params"]
    assert params["model"]["video_trunk"] == "r2plus1d_18"
    assert params["model"]["audio_trunk"] == "resnet9"
    assert params["model"]["pooling"] == "avg"
    assert params["augment"]["mean"] == [0.45] * 3 and params["augment"]["std"] == [0.225] * 3
    assert params["audio"]["frontend"] == "gdt"
    # the file's args: aud_spec_type 1 = 40 filters, z_normalize = (1.93, 17.89)
    assert params["audio"]["n_mels"] == 40 and params["audio"]["spec_norm"] == [1.93, 17.89]
    assert params["num_frames"] == 30 and params["augment"]["crop_size"] == 112
    assert imported["map_shape"] == [512, 4, 7, 7]


def test_args_of_the_file_choose_the_front_end(tmp_path, official_state):
    path = write_training_checkpoint(
        tmp_path / "stica_like.pth",
        official_state,
        args=gdt_args(aud_spec_type=2, z_normalize=False, clip_len=16),
    )
    params = import_gdt(path, PretrainConfig())["params"]
    assert params["audio"]["n_mels"] == 257 and params["audio"]["spec_norm"] == [0.0, 1.0]
    assert params["num_frames"] == 16


def test_features_equal_a_model_loaded_directly(tmp_path, imported, official_state):
    """The reference: torchvision's R(2+1)D-18 and ResNet (one block per stage, 1-channel conv1)
    loaded strictly with the official names, i.e. the modules GDT's code builds."""
    ckpt = tmp_path / "gdt.pt"
    from stica.train.checkpoint import save_checkpoint

    save_checkpoint(ckpt, imported)
    model, config, provenance = load_pretrained(ckpt)
    model.eval()
    assert config.audio.frontend == "gdt"
    assert provenance.fps == 30.0 and provenance.imported["sha256"] is None

    video = r2plus1d_18(weights=None)
    video.fc = nn.Identity()
    prefix = "video_network.base."
    video.load_state_dict(
        {k[len(prefix) :]: v for k, v in official_state.items() if k.startswith(prefix)},
        strict=True,
    )
    audio = ResNet(BasicBlock, [1, 1, 1, 1])
    audio.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    prefix = "audio_network.base."
    audio.load_state_dict(
        {k[len(prefix) :]: v for k, v in official_state.items() if k.startswith(prefix)},
        strict=True,
    )
    video.eval(), audio.eval()

    gen = torch.Generator().manual_seed(1)
    clip = torch.randn(2, 3, 4, 32, 32, generator=gen)
    spec = torch.randn(2, 1, 40, 99, generator=gen)
    with torch.no_grad():
        want_v = video(clip)  # (2, 512): layer4, then the average pool
        a = audio.maxpool(audio.relu(audio.bn1(audio.conv1(spec))))
        a = audio.layer4(audio.layer3(audio.layer2(audio.layer1(a))))
        want_a = audio.avgpool(a).flatten(1)
        torch.testing.assert_close(model.video_features(clip), want_v, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.audio_features(spec), want_a, rtol=1e-5, atol=1e-5)
        # the embeddings through GDT's head layout, loaded with its own names
        for name, head, feats in (
            ("mlp_v", model.video_head, want_v),
            ("mlp_a", model.audio_head, want_a),
        ):
            gdt_head = _GdtMLP()
            gdt_head.load_state_dict(
                {
                    k[len(name) + 1 :]: v
                    for k, v in official_state.items()
                    if k.startswith(name + ".")
                }
            )
            want = F.normalize(gdt_head.eval()(feats), dim=1)
            torch.testing.assert_close(head.eval()(feats), want, rtol=1e-5, atol=1e-5)


class _Unsqueeze(nn.Module):
    def forward(self, x):
        return x.unsqueeze(-1)


class _GdtMLP(nn.Module):
    """model.py's MLP(512, 256, n_hidden=512) module for module, for its state-dict names."""

    def __init__(self) -> None:
        super().__init__()
        self.block_forward = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(512, 512, bias=False),
            _Unsqueeze(),
            nn.BatchNorm1d(512),
            nn.Flatten(),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(512, 256),
        )

    def forward(self, x):
        return self.block_forward(x)


def _with(state, drop=(), replace=None, rename=None):
    out = {k: v for k, v in state.items() if k not in drop}
    out.update(replace or {})
    if rename:
        out = {rename(k): v for k, v in out.items()}
    return out


@pytest.mark.parametrize(
    "key",
    ["video_network.base.layer3.1.conv2.0.3.weight", "audio_network.base.bn1.num_batches_tracked"],
)
def test_missing_trunk_key_is_named(tmp_path, official_state, key):
    path = write_training_checkpoint(tmp_path / "m.pth", _with(official_state, drop=[key]))
    with pytest.raises(CheckpointError, match=f"{key}.*missing"):
        import_gdt(path, PretrainConfig())


@pytest.mark.parametrize(
    "key,shape",
    [
        ("audio_network.base.layer2.0.bn1.running_var", (64,)),
        ("video_network.base.stem.0.weight", (45, 3, 3, 7, 7)),
    ],
)
def test_misshaped_trunk_key_is_named(tmp_path, official_state, key, shape):
    state = _with(official_state, replace={key: torch.zeros(shape)})
    path = write_training_checkpoint(tmp_path / "s.pth", state)
    with pytest.raises(CheckpointError, match=rf"{key} has shape \({shape[0]},"):
        import_gdt(path, PretrainConfig())


def test_unknown_key_is_named(tmp_path, official_state):
    extra = {
        "video_pooling.1.weight": torch.zeros(3),
        "audio_network.base.layer1.1.conv1.weight": torch.zeros(1),
    }
    for key, value in extra.items():
        path = write_training_checkpoint(
            tmp_path / "u.pth", _with(official_state, replace={key: value})
        )
        with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
            import_gdt(path, PretrainConfig())


def test_video_text_model_is_refused_clearly(tmp_path, official_state):
    state = _with(
        official_state,
        drop=list(audio_shapes()),
        replace={"text_network.fc1.weight": torch.zeros(2048, 300)},
    )
    path = write_training_checkpoint(
        tmp_path / "vt.pth", state, args=gdt_args(model="vid_text_gdt")
    )
    with pytest.raises(CheckpointError, match="vid_text_gdt"):
        import_gdt(path, PretrainConfig())


def test_module_prefix_and_state_dict_key(tmp_path, official_state):
    state = _with(official_state, rename=lambda k: f"module.{k}")
    path = write_training_checkpoint(tmp_path / "ddp.pth", state, key="state_dict")
    payload = import_gdt(path, PretrainConfig())
    key = "video_network.base.layer4.1.conv2.1.running_mean"
    assert torch.equal(payload["model"][stica_key(key)], official_state[key])


def test_allow_missing_is_for_heads_only(official_file):
    with pytest.raises(CheckpointError, match="only head tensors"):
        import_gdt(official_file, PretrainConfig(), allow_missing=("video_trunk.4.*",))
    with pytest.raises(CheckpointError, match="matches no tensor"):
        import_gdt(official_file, PretrainConfig(), allow_missing=("nothing.*",))


def test_linear_heads_need_allow_missing_and_are_recorded(tmp_path):
    """GDT without its MLP (nn.Linear heads) cannot fill stica's heads: an error naming the key,
    unless --allow-missing lets the heads keep their initialisation, which the checkpoint says."""
    state = random_state(official_shapes(use_mlp=False), seed=3)
    path = write_training_checkpoint(tmp_path / "linear.pth", state, args=gdt_args(use_mlp=False))
    with pytest.raises(CheckpointError, match=r"mlp_v\.weight.*--allow-missing 'video_head\.\*'"):
        import_gdt(path, PretrainConfig())
    payload = import_gdt(path, PretrainConfig(), allow_missing=HEADS_OFF)
    prov = payload["provenance"]
    assert prov["pretrained"] == {
        "video_trunk": True,
        "audio_trunk": True,
        "video_head": False,
        "audio_head": False,
    }
    assert "mlp_v.weight" in prov["not_imported"]["video_head"]


class _RunsCode:
    """Unpickling this calls a function of the pickle's choosing (here: writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, official_state):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": dict(official_state), "epoch": 1, "hook": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refused to unpickle builtins\.exec \("):
        load_gdt_file(path)
    assert not marker.exists()
    # the legacy (non-zip) format goes through the same restricted unpickler
    legacy = tmp_path / "evil_legacy.pth"
    torch.save({"hook": _RunsCode(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_gdt_file(legacy)
    assert not marker.exists()
    # and a plain pickle, not a torch file at all
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"hook": _RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load_gdt_file(raw)
    assert not marker.exists()
    # the payload is a real exploit: an unrestricted unpickler runs it
    pickle.loads(raw.read_bytes())
    assert marker.read_text() == "pwned"


def test_training_state_objects_become_inert(official_file):
    payload = load_gdt_file(official_file)
    assert set(payload) == {"model", "optimizer", "lr_scheduler", "epoch", "args"}
    after = payload["lr_scheduler"]["after_scheduler"]
    assert not isinstance(after, torch.optim.lr_scheduler.LRScheduler)
    assert type(after.optimizer).__name__ == "_Inert"
    assert payload["args"].clip_len == 30


# --- fetching ---------------------------------------------------------------------------------


def test_file_url_is_cached_once_and_checked(tmp_path, official_file):
    digest = hashlib.sha256(official_file.read_bytes()).hexdigest()
    url = official_file.as_uri()
    cache = tmp_path / "cache"
    first = fetch(url, sha256=digest, cache_dir=cache)
    assert first.downloaded and first.sha256 == digest and first.path.parent == cache / "downloads"
    again = fetch(url, sha256=digest.upper(), cache_dir=cache)
    assert not again.downloaded and again.path == first.path
    with pytest.raises(SticaError, match=f"sha256 is {digest}, expected {'0' * 64}"):
        fetch(url, sha256="0" * 64, cache_dir=cache)
    assert not first.path.exists()  # a mismatching download does not stay in the cache
    with pytest.raises(SticaError, match="64 hexadecimal"):
        fetch(url, sha256="abc", cache_dir=cache)
    with pytest.raises(SticaError, match="download failed"):
        fetch((tmp_path / "nope.pth").as_uri(), cache_dir=cache)
    assert not list((cache / "downloads").glob(".*part*"))


def test_cli_imports_a_url_and_info_shows_provenance(tmp_path, official_file):
    digest = hashlib.sha256(official_file.read_bytes()).hexdigest()
    out = tmp_path / "gdt_k400.pt"
    args = ["import-gdt", official_file.as_uri(), "--out", str(out), "--sha256", digest]
    args += ["--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"sha256 {digest}" in result.output
    ckpt = load_checkpoint(out, kind="pretrain")
    assert ckpt["provenance"]["sha256"] == digest
    assert ckpt["provenance"]["source"] == official_file.as_uri()

    shown = CliRunner().invoke(cli, ["info", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["source_sha256"] == digest and info["source_epoch"] == 200
    assert info["pretrained"].startswith("video_trunk, audio_trunk")

    wrong = CliRunner().invoke(cli, [*args[:-4], "--sha256", "f" * 64, "--out", str(out)])
    assert wrong.exit_code != 0 and "expected ffff" in str(wrong.exception)
    fixed = CliRunner().invoke(cli, [*args, "--set", "model.pooling=transformer"])
    assert fixed.exit_code != 0 and "fixed by the GDT weights" in str(fixed.exception)


def test_video_and_audio_tables_cover_the_official_layout():
    """Sanity of the test's own table: GDT's R(2+1)D-18 trunk has 33.3 M parameters and its
    ResNet-9 4.9 M (+ the unused 0.5 M classifier)."""
    count = {
        name: sum(
            int(torch.Size(s).numel())
            for k, s in shapes.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
        for name, shapes in (("video", video_shapes()), ("audio", audio_shapes()))
    }
    assert count["video"] == sum(
        p.numel() for n, p in r2plus1d_18().named_parameters() if "fc" not in n
    )
    assert 4.8e6 < count["audio"] - 513000 < 5.0e6


# --- end to end: the imported checkpoint wherever a checkpoint goes --------------------------


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_imported_checkpoint_works_everywhere(
    tmp_path, official_state, official_file, tiny_store, tiny_params_file
):
    """import-gdt, then extract-features, retrieve, finetune and audio-eval on a tiny store (the
    clip shrunk to 4 frames of 32 pixels so R(2+1)D-18 runs in seconds on a CPU; the weights'
    frame rate that of the tiny store, 15 fps)."""
    small = ["--set", "num_frames=4", "--set", "augment.crop_size=32"]
    small += ["--set", "augment.eval_short_side=32"]
    params = ["--params", tiny_params_file]
    # the released file was trained at 30 fps: a store at 15 fps is refused in one line
    at_30 = tmp_path / "gdt30.pt"
    _invoke("import-gdt", official_file, "--out", at_30, *params, *small)
    refused = CliRunner().invoke(
        cli, [str(a) for a in ("extract-features", tiny_store, "--ckpt", at_30, "--out",
                               tmp_path / "x.h5", *params)]
    )  # fmt: skip
    assert isinstance(refused.exception, SticaError) and not (tmp_path / "x.h5").exists()
    assert "frames at 15 fps, but" in str(refused.exception)
    assert "'preprocess.fps' = 30" in str(refused.exception)

    ckpt = tmp_path / "gdt.pt"
    at_15 = write_training_checkpoint(
        tmp_path / "gdt15.pth", official_state, args=gdt_args(target_fps=15)
    )
    out = _invoke("import-gdt", at_15, "--out", ckpt, *params, *small)
    assert "at 15 fps" in out.output

    feats = tmp_path / "features.h5"
    one_clip = ["--set", "clips_per_video=1"]
    _invoke("extract-features", tiny_store, "--ckpt", ckpt, "--out", feats, *params, *one_clip)
    from stica.eval.features_io import read_features

    fs = read_features(feats)
    assert fs.dim == 512 and fs.audio_features.shape[1] == 512 and fs.checkpoint == str(ckpt)

    retrieval = tmp_path / "retrieval.json"
    _invoke("retrieve", feats, "--store", tiny_store, "--out", retrieval, *params)
    assert "R@1" in json.loads(retrieval.read_text())

    metrics = tmp_path / "finetune.json"
    _invoke(
        "finetune", tiny_store, "--ckpt", ckpt, "--out", tmp_path / "ft", "--metrics", metrics,
        *params, "--set", "epochs=1", "--set", "baseline=false", "--set", "eval_clips=1",
    )  # fmt: skip
    m = json.loads(metrics.read_text())
    assert 0.0 <= m["top1"]["pretrained"] <= 1.0

    audio = tmp_path / "audio.json"
    _invoke("audio-eval", tiny_store, "--ckpt", ckpt, "--out", audio, *params)
    a = json.loads(provenance_path(audio).read_text())
    assert a["pretrained"]["trunk_unchanged"] and a["random_init"]["top1"] >= 0.0
