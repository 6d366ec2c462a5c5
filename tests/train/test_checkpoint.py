"""The typed checkpoint boundary: load_pretrained gives the model, its PretrainConfig and its
provenance, with one error policy; a store whose clips are not the model's inputs is refused in
one line by every consumer (and by pretraining)."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from stica.cli import main
from stica.config import ConfigError, load_section, official_term_count
from stica.data.preprocess import preprocess
from stica.data.store import Store
from stica.errors import SticaError
from stica.losses.feature_crops import official_terms
from stica.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_encoder,
    load_pretrained,
    random_init,
    save_checkpoint,
)


def test_load_pretrained_is_typed(tiny_checkpoint, tiny_store, tiny_params_file):
    model, config, provenance = load_pretrained(tiny_checkpoint)
    assert config == load_section("pretrain", tiny_params_file)  # the params it was trained with
    store = Store(tiny_store)
    assert provenance.checkpoint == str(tiny_checkpoint)
    assert provenance.fps == store.meta.fps == 15.0
    assert provenance.short_side == store.meta.short_side == 32
    assert provenance.manifest_hash == store.manifest_hash() and provenance.imported is None
    assert provenance.determinism["deterministic"] is True
    weights = load_checkpoint(tiny_checkpoint, kind="pretrain")["model"]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    # the random baseline: the initial weights of pretraining with the same seed
    rand = random_init(config, seed=config.seed)
    assert rand.provenance.checkpoint == "random" and rand.provenance.fps is None
    again = load_encoder("random", config, seed=config.seed).model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in rand.model.state_dict().items())


def test_one_error_policy(tiny_checkpoint, tmp_path):
    payload = load_checkpoint(tiny_checkpoint, kind="pretrain")
    newer = dict(payload, params={**payload["params"], "future_param": 1})
    save_checkpoint(tmp_path / "newer.pt", newer)
    with pytest.raises(CheckpointError, match="newer.pt: pretrain params of another version"):
        load_pretrained(tmp_path / "newer.pt")
    wider = dict(payload, model_config={**payload["model_config"], "width": 8})
    save_checkpoint(tmp_path / "wider.pt", wider)
    with pytest.raises(CheckpointError, match="model_config and its params"):
        load_pretrained(tmp_path / "wider.pt")
    save_checkpoint(tmp_path / "ft.pt", dict(payload, kind="finetune"))
    with pytest.raises(CheckpointError, match="expected 'pretrain'"):
        load_pretrained(tmp_path / "ft.pt")
    with pytest.raises(SticaError, match="needs the pretrain params"):
        load_encoder("random", None)


@pytest.fixture(scope="module")
def other_stores(tiny_store, tiny_params_file, tmp_path_factory):
    """The tiny demo videos preprocessed again: at 10 fps; at 24 px and 16 kHz."""
    root = tmp_path_factory.mktemp("other_stores")
    base = load_section("preprocess", tiny_params_file)
    stores = {}
    for name, change in (
        ("fps", {"fps": 10.0}),
        ("small", {"short_side": 24, "sample_rate": 16000}),
    ):
        preprocess(tiny_store.parent / "demo", root / name, dataclasses.replace(base, **change))
        stores[name] = root / name
    return stores


def _exit_code(capsys, *args) -> int:
    """Run the real entry point (``stica ARGS``); returns its exit code."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def _stica(capsys, *args) -> str:
    """Run the real entry point; returns its one-line error (exit code 2 asserted)."""
    assert _exit_code(capsys, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_stores_that_do_not_match_the_checkpoint_are_refused(
    other_stores, tiny_checkpoint, tiny_params_file, tmp_path, capsys
):
    params = ["--params", tiny_params_file]
    out = tmp_path / "f.h5"
    err = _stica(capsys, "extract-features", other_stores["fps"], "--ckpt", tiny_checkpoint,
                 "--out", out, *params)  # fmt: skip
    assert "frames at 10 fps, but" in err and "'preprocess.fps' = 15" in err
    err = _stica(capsys, "extract-features", other_stores["small"], "--ckpt", tiny_checkpoint,
                 "--out", out, *params)  # fmt: skip
    assert "frames of 24 px on the short side" in err and "short_side' >= 32" in err
    assert not out.exists()
    err = _stica(capsys, "audio-eval", other_stores["small"], "--ckpt", tiny_checkpoint,
                 "--out", tmp_path / "a.json", *params)  # fmt: skip
    assert "audio at 16000 Hz" in err and "'preprocess.sample_rate' = 24000" in err
    # audio-eval reads no frames: another fps is fine for it
    assert _exit_code(capsys, "audio-eval", other_stores["fps"], "--ckpt", tiny_checkpoint,
                      "--out", tmp_path / "a.json", "--no-baseline", *params) == 0  # fmt: skip
    err = _stica(capsys, "finetune", other_stores["fps"], "--ckpt", tiny_checkpoint, "--out",
                 tmp_path / "ft", *params)  # fmt: skip
    assert "frames at 10 fps" in err and not (tmp_path / "ft").exists()


def test_pretraining_refuses_a_store_smaller_than_its_evaluation(
    other_stores, tiny_params_file, tmp_path, capsys
):
    err = _stica(capsys, "pretrain", other_stores["small"], "--out", tmp_path / "p.pt",
                 "--params", tiny_params_file)  # fmt: skip
    assert "frames of 24 px" in err and "the pretrain params" in err
    assert not (tmp_path / "p.pt").exists()


def test_the_params_count_the_official_pairs_as_the_losses_make_them():
    """config.official_term_count (no torch import) agrees with the losses' own pair list."""
    for medium_s in range(3):
        for small_s in range(3):
            for medium_t in range(3):
                for small_t in range(3):
                    counts = {
                        "space_medium": medium_s,
                        "space_small": small_s,
                        "time_medium": medium_t,
                        "time_small": small_t,
                    }
                    assert official_term_count(counts) == len(official_terms(counts)), counts


def test_params_do_not_load_torch():
    """config.py reads the trunks' dims from stica.models.dims without importing torch."""
    import subprocess

    code = "import sys, stica.config as c; c.ModelConfig(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(ConfigError, match="must divide the video feature size 32"):
        load_section("pretrain", None, ["model.width=4", "model.transformer_heads=3"])
