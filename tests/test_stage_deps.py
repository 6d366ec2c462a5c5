"""dvc.yaml cannot go stale: every stage depends on every project file its command imports
(transitively, lazy imports inside functions included), and lists every param of the params
sections it reads (but the few that cannot change its outputs, listed below with the reason)."""

from __future__ import annotations

import ast
import dataclasses

import pytest
import yaml

from scripts.stage_deps import (
    ROOT,
    code_files,
    compact,
    covers,
    imports_of,
    is_code_dep,
    module_path,
    rewrite,
    stage_deps,
    stage_module,
)

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _imported(stage: str) -> list[str]:
    files = code_files(stage_module(DVC[stage]["cmd"]))
    return sorted(f.relative_to(ROOT).as_posix() for f in files)


@pytest.mark.parametrize("stage", sorted(DVC))
def test_every_imported_file_is_a_dep(stage):
    deps = DVC[stage].get("deps", [])
    missing = [f for f in _imported(stage) if not any(covers(d, f) for d in deps)]
    assert not missing, (
        f"stage {stage!r} runs {len(missing)} files it does not depend on: {missing} "
        "(python scripts/stage_deps.py rewrites dvc.yaml's code deps)"
    )


@pytest.mark.parametrize("stage", sorted(DVC))
def test_every_code_dep_is_imported(stage):
    """No stale entries either: a code dep that no import reaches only reruns the stage for
    nothing (and a removed file would break `dvc repro`)."""
    files = _imported(stage)
    code = [d for d in DVC[stage].get("deps", []) if is_code_dep(d)]
    unused = [d for d in code if not any(covers(d, f) for f in files)]
    assert not unused, f"stage {stage!r} depends on code it never imports: {unused}"
    assert code == stage_deps()[stage], "run python scripts/stage_deps.py"


def test_lazy_imports_inside_functions_are_found():
    # stages/pretrain.py imports stica.eval.pretext inside its click command only
    assert "stica.eval.pretext" in imports_of(ROOT / "stages" / "pretrain.py")
    files = {f.relative_to(ROOT).as_posix() for f in code_files("stages.pretrain")}
    # ... and the packages on the way run their __init__.py
    assert {"stica/eval/pretext.py", "stica/eval/__init__.py", "stica/__init__.py"} <= files
    assert module_path("stica.train") == ROOT / "stica" / "train" / "__init__.py"
    assert module_path("torch") is None


def test_relative_and_from_package_imports(tmp_path):
    pkg = tmp_path / "stica" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "stica" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n    from .c import name\n")
    (pkg / "b.py").write_text("from stica import other\n")
    (pkg / "c.py").write_text("name = 1\n")
    (tmp_path / "stica" / "other.py").write_text("import json\n")
    (tmp_path / "stica" / "unused.py").write_text("")
    files = code_files("stica.sub.a", tmp_path)
    rel = sorted(f.relative_to(tmp_path).as_posix() for f in files)
    assert rel == [
        "stica/__init__.py",
        "stica/other.py",
        "stica/sub/__init__.py",
        "stica/sub/a.py",
        "stica/sub/b.py",
        "stica/sub/c.py",
    ]
    # a folder whose every module is used is one dep; stica/ is not (unused.py)
    assert compact(files, tmp_path) == [
        "stica/__init__.py",
        "stica/other.py",
        "stica/sub",
    ]


def test_rewrite_keeps_data_deps_and_the_rest():
    text = (ROOT / "dvc.yaml").read_text()
    generated = {name: ["stica/x.py"] for name in DVC}
    new = yaml.safe_load(rewrite(text, generated))["stages"]
    for name, stage in DVC.items():
        data = [d for d in stage.get("deps", []) if not is_code_dep(d)]
        assert new[name]["deps"] == [*data, "stica/x.py"]
        assert {k: v for k, v in new[name].items() if k != "deps"} == {
            k: v for k, v in stage.items() if k != "deps"
        }
    assert rewrite(text, stage_deps()) == text  # the committed file is the generated one


# --- params -----------------------------------------------------------------------------------

# Params that cannot change a stage's outputs, so that changing them reruns nothing.
NOT_RESULTS = {
    "preprocess.workers": "worker processes: every input is decoded alone, the store is the same",
    "pretrain.workers": "DataLoader workers: every clip is drawn from (seed, epoch, index)",
    "pretrain.prefetch_factor": "batches prepared ahead: the same batches, sooner",
    "pretrain.activation_checkpointing": "recomputed activations: the same gradients (tested)",
    "features.workers": "DataLoader workers: clips are uniformly spaced, in order",
    "features.chunk_videos": "how often progress is saved; the features file is the same",
    "finetune.workers": "DataLoader workers: every clip is drawn from (seed, epoch, index)",
}
# Params that only shape pretraining (its losses, optimiser and training augmentation): the
# randomly initialised model of features_random is built and fed without them.
TRAINING_ONLY = (
    "pretrain.seed",  # the random init's seed is features.seed
    "pretrain.mode",
    "pretrain.epochs",
    "pretrain.batch_size",
    "pretrain.lr",
    "pretrain.base_batch_size",
    "pretrain.optimizer",
    "pretrain.momentum",
    "pretrain.weight_decay",
    "pretrain.warmup_epochs",
    "pretrain.warmup_start_lr",
    "pretrain.schedule",
    "pretrain.small_rgb_crops",
    "pretrain.lambda_va",
    "pretrain.lambda_vv",
    "pretrain.temperature_va",
    "pretrain.temperature_vv",
    "pretrain.audio_freeze_epochs",
    "pretrain.vv_pairs",
    "pretrain.vv_reduction",
    "pretrain.va_reduction",
    "pretrain.stop_grad_keys",
    "pretrain.max_bad_steps",
    "pretrain.jpeg_decode",  # training clips; extract-features has its own
    "pretrain.deterministic",  # extract-features always runs deterministically
    "pretrain.compile",  # pretraining's trunk; extract-features runs it eager
    "pretrain.channels_last",  # likewise: extract-features picks the layout by device
    "pretrain.crops",  # feature crops are training views
    "pretrain.audio.volume_jitter",  # the training gain
    # the random resized crop, flip and colour augmentation of training clips; evaluation uses
    # crop_size, eval_short_side, mean and std only
    "pretrain.augment.small_crop_size",
    "pretrain.augment.scale",
    "pretrain.augment.small_scale",
    "pretrain.augment.ratio",
    "pretrain.augment.flip_p",
    "pretrain.augment.jitter_p",
    "pretrain.augment.brightness",
    "pretrain.augment.contrast",
    "pretrain.augment.saturation",
    "pretrain.augment.hue",
    "pretrain.augment.jitter_order",
    "pretrain.augment.grayscale_p",
    "pretrain.augment.blur_p",
    "pretrain.augment.blur_sigma",
)
# (stage, section): read by the command, but not for what this stage's cmd asks, with the reason
NOT_READ_HERE = {
    ("features_pretrained", "pretrain"): "for --ckpt random only: the checkpoint's params rule",
    ("audio_eval", "pretrain"): "for --ckpt random only: the checkpoint's params rule",
}
ALLOWED = {"features_random": TRAINING_ONLY}


def _leaves(cls, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        name = f"{prefix}.{f.name}"
        out += _leaves(type(default), name) if dataclasses.is_dataclass(default) else [name]
    return out


def _sections_read(module: str) -> set[str]:
    """The params sections a command loads: its load_section("NAME", ...) calls."""
    tree = ast.parse(module_path(module).read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_section"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def _exempt(stage: str, key: str) -> bool:
    prefixes = (*NOT_RESULTS, *ALLOWED.get(stage, ()))
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


@pytest.mark.parametrize("stage", sorted(DVC))
def test_every_param_a_stage_reads_is_listed(stage):
    from stica.config import SECTIONS

    sections = _sections_read(stage_module(DVC[stage]["cmd"]))
    sections -= {s for (st, s) in NOT_READ_HERE if st == stage}
    assert sections, f"stage {stage!r} reads no params section"
    read = [k for s in sorted(sections) for k in _leaves(SECTIONS[s], s)]
    listed = DVC[stage].get("params", [])
    missing = [k for k in read if k not in listed and not _exempt(stage, k)]
    assert not missing, f"stage {stage!r} reads params it does not list: {missing}"
    unread = [k for k in listed if k not in read]
    assert not unread, f"stage {stage!r} lists params it does not read: {unread}"
    exempt_but_listed = [k for k in listed if _exempt(stage, k)]
    assert not exempt_but_listed, f"{stage!r}: {exempt_but_listed} cannot change its outputs"


def test_the_allowlists_name_real_params():
    from stica.config import SECTIONS

    every = [k for name, cls in SECTIONS.items() for k in _leaves(cls, name)]
    for key in (*NOT_RESULTS, *TRAINING_ONLY):
        assert any(k == key or k.startswith(f"{key}.") for k in every), key
    assert _sections_read("stages.extract_features") == {"features", "pretrain"}


def test_training_never_imports_evaluation():
    """One direction only: eval/ may use train/ (checkpoints, the finetuning loop), never back."""
    for path in sorted((ROOT / "stica" / "train").rglob("*.py")):
        imported = imports_of(path)
        assert not any(m == "stica.eval" or m.startswith("stica.eval.") for m in imported), path
    # ... nor does anything training runs, transitively
    files = code_files("stica.train.pretrain") | code_files("stica.train.finetune")
    assert not [f for f in files if "eval" in f.relative_to(ROOT).parts], files
