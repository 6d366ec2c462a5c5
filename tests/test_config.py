import dataclasses

import pytest
import yaml

from stica.config import SECTIONS, ConfigError, load_section, to_dict


def test_committed_params_equal_the_builtin_defaults(repo_root):
    """Commands run outside the repo use the dataclass defaults: they must be the demo profile."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    for name, cls in SECTIONS.items():
        assert params[name] == to_dict(cls()), name


def test_unknown_key_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("preprocess:\n  fps: 15\n  short_sidee: 64\n")
    with pytest.raises(ConfigError, match="unknown param 'preprocess.short_sidee'"):
        load_section("preprocess", path)


def test_wrong_type_and_range_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("preprocess:\n  short_side: sixty\n")
    with pytest.raises(ConfigError, match="preprocess.short_side"):
        load_section("preprocess", path)
    with pytest.raises(ConfigError, match="preprocess.workers"):
        load_section("preprocess", None, ["workers=-1"])


def test_overrides_and_frozen(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("preprocess:\n  fps: 15\n")
    cfg = load_section("preprocess", path, ["short_side=64"])
    assert (cfg.fps, cfg.short_side) == (15.0, 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fps = 3


def test_paper_profile_is_complete_and_valid(repo_root):
    """profiles/paper.yaml is a drop-in params.yaml: every section loads, with the paper's values."""
    path = repo_root / "profiles" / "paper.yaml"
    params = yaml.safe_load(path.read_text())
    assert set(params) == set(SECTIONS)
    pretrain = load_section("pretrain", path)
    assert (pretrain.model.video_trunk, pretrain.num_frames, pretrain.augment.crop_size) == (
        "r2plus1d_18",
        30,
        112,
    )
    assert (pretrain.batch_size, pretrain.epochs, pretrain.lr) == (512, 100, 0.64)
    for profile in ("paper.yaml", "paper-60f.yaml"):
        for name in SECTIONS:
            load_section(name, repo_root / "profiles" / profile)


def test_speed_switches_read_on_and_off_as_yaml_writes_them(tmp_path):
    """PyYAML (params files, --set) reads a bare on/off as true/false: auto|on|off params take
    both spellings; anything else is refused with the key's name."""
    path = tmp_path / "params.yaml"
    path.write_text("pretrain:\n  compile: off\n  channels_last: on\nfeatures:\n  autocast: 'on'\n")
    cfg = load_section("pretrain", path)
    assert (cfg.compile, cfg.channels_last) == ("off", "on")
    assert load_section("pretrain", path, ["compile=on", "channels_last=auto"]).compile == "on"
    assert load_section("features", path).autocast == "on"
    with pytest.raises(ConfigError, match="pretrain.compile"):
        load_section("pretrain", path, ["compile=yes please"])
    with pytest.raises(ConfigError, match="pretrain.prefetch_factor"):
        load_section("pretrain", path, ["prefetch_factor=0"])
