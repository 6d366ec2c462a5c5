"""Preprocessing on a cluster: slices + merge-stores equal a one-machine run; the SLURM templates
in scripts/slurm run as written, here with stand-ins for SLURM's own commands (sbatch, srun,
scontrol) that set the variables SLURM sets."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stica.cli import main
from stica.config import PreprocessConfig
from stica.data.preprocess import merge_stores, preprocess
from stica.data.store import Store
from stica.errors import SticaError
from tests import fixtures as fx
from tests.dist_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "scripts" / "slurm"


def _cfg(**kw):
    return PreprocessConfig(**{"fps": 10.0, "short_side": 32, "videos_per_shard": 2, **kw})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """11 files -> 6 chunks of 2: stored videos, a rejected one, skipped ones, an unplaced one."""
    root = tmp_path_factory.mktemp("cluster") / "in"
    for i in range(7):
        fx.write_video(root / f"c{i % 2}" / f"v{i}.mp4", seconds=0.5, seed=i, audio=i % 3 > 0)
    fx.write_truncated(root / "c0" / "broken.mp4")
    fx.write_text_as_mp4(root / "c1" / "notes.mp4")
    fx.write_audio_only_mp4(root / "c1" / "voice.m4a")
    (root / "README").write_text("my videos\n")
    single = root.parent / "single"
    preprocess(root, single, _cfg(workers=0), progress=False)
    return root, single


def test_three_slices_in_one_folder_merge_into_the_one_machine_store(inputs, tmp_path):
    root, single = inputs
    shared = tmp_path / "shared"
    results = [
        preprocess(root, shared, _cfg(workers=0), False, num_shards=3, shard_index=i)
        for i in (2, 0, 1)  # any order, as array tasks finish
    ]
    assert not (shared / "meta.json").exists()  # unfinished until merged
    assert sum(r.shards_built for r in results) == 6
    assert [r.part for r in results] == ["part 3 of 3", "part 1 of 3", "part 2 of 3"]
    with pytest.raises(SticaError, match="not a finished stica store"):
        Store(shared)
    merged = merge_stores([shared], shared)
    assert fx.store_content(shared) == fx.store_content(single)
    assert not list(shared.glob("part-*.json"))  # spent markers removed
    one = Store(single)
    assert (merged.stored, merged.rejected, merged.skipped) == (
        len(one),
        len(one.rejected),
        len(one.skipped),
    )
    assert (len(one), len(one.rejected), len(one.skipped)) == (7, 1, 3)


def test_one_folder_per_slice_merge_into_a_new_store(inputs, tmp_path):
    root, single = inputs
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        preprocess(root, part, _cfg(workers=0), False, num_shards=3, shard_index=i)
    merge_stores(parts, tmp_path / "merged")
    assert fx.store_content(tmp_path / "merged") == fx.store_content(single)
    # a rerun of a slice keeps its finished shards
    again = preprocess(root, parts[1], _cfg(workers=0), False, num_shards=3, shard_index=1)
    assert (again.shards_built, again.shards_kept) == (0, 2)


def test_merge_refuses_incomplete_or_mixed_runs(inputs, tmp_path, capsys):
    root, _ = inputs
    shared = tmp_path / "s"
    for i in (0, 2):
        preprocess(root, shared, _cfg(workers=0), False, num_shards=3, shard_index=i)
    with pytest.raises(SticaError, match=r"1 of 3 parts not finished \(shard index 1\)"):
        merge_stores([shared], shared)
    with pytest.raises(SystemExit):
        main(["info", str(shared), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert (info["parts_done"], info["parts"], info["missing_parts"]) == (2, 3, [1])
    other = tmp_path / "other"
    preprocess(root, other, _cfg(workers=0, fps=5.0), False, num_shards=3, shard_index=1)
    with pytest.raises(SticaError, match="belongs to another run"):
        merge_stores([shared, other], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SticaError, match="no partial stores"):
        merge_stores([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out" / "meta.json").exists()


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def test_cli_shard_options_are_checked(inputs, tmp_path, capsys):
    root, _ = inputs
    code, err = _cli(["preprocess", str(root), "--out", str(tmp_path), "--num-shards", "3"], capsys)
    assert code == 2 and "--shard-index is required" in err and len(err.strip().splitlines()) == 1
    code, err = _cli(
        [
            "preprocess",
            str(root),
            "--out",
            str(tmp_path),
            "--num-shards",
            "3",
            "--shard-index",
            "3",
        ],
        capsys,
    )
    assert code == 2 and "--shard-index must be < --num-shards" in err
    code, err = _cli(["merge-stores", str(tmp_path), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "no partial stores" in err


# ------------------------------------------------------------------------------------------------
# The SLURM templates
# ------------------------------------------------------------------------------------------------

SRUN = """#!/bin/bash
# srun: one copy of the command per node (every "node" is this machine)
while [[ "$1" == -* ]]; do shift; done
pids=()
for ((i = 0; i < ${SLURM_NNODES:-1}; i++)); do
    SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 "$@" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""

SCONTROL = """#!/bin/bash
# scontrol show hostnames LIST: every node of the job is this machine. One line at a time, so a
# reader that stops early (`| head -n 1` under pipefail) fails here as it can on a cluster.
[[ "$1 $2" == "show hostnames" ]] || exit 1
for ((i = 0; i < ${SLURM_NNODES:-1}; i++)); do echo 127.0.0.1; sleep 0.2; done
"""

SBATCH = '''#!{python}
"""sbatch: run the script now, once or per array task, with the variables SLURM sets."""
import os, subprocess, sys

args, opts = sys.argv[1:], {{}}
while args and args[0].startswith("--"):
    key, _, value = args.pop(0)[2:].partition("=")
    opts[key] = value
script, rest = args[0], args[1:]
for line in open(script):
    if line.startswith("#SBATCH --"):
        key, _, value = line[len("#SBATCH --") :].strip().partition("=")
        opts.setdefault(key, value)
job = str(1000 + len(os.listdir(os.environ["SBATCH_SPOOL"])))
open(os.path.join(os.environ["SBATCH_SPOOL"], job), "w").close()
nodes = int(opts.get("nodes", "1"))
env = dict(
    os.environ,
    SLURM_JOB_ID=job,
    SLURM_NNODES=str(nodes),
    SLURM_JOB_NODELIST=f"node[0-{{nodes - 1}}]" if nodes > 1 else "node0",
    # this 2-core machine: one CPU per task whatever the script asks for
    SLURM_CPUS_PER_TASK="1",
)
runs = [{{}}]
if "array" in opts:
    lo, hi = map(int, opts["array"].split("-"))
    runs = [
        dict(
            SLURM_ARRAY_JOB_ID=job,
            SLURM_ARRAY_TASK_ID=str(i),
            SLURM_ARRAY_TASK_MIN=str(lo),
            SLURM_ARRAY_TASK_MAX=str(hi),
            SLURM_ARRAY_TASK_COUNT=str(hi - lo + 1),
        )
        for i in range(lo, hi + 1)
    ]
for extra in runs:
    subprocess.run(["bash", script, *rest], env={{**env, **extra}}, check=True)
print(job if "parsable" in opts else f"Submitted batch job {{job}}")
'''


@pytest.fixture
def slurm_env(tmp_path):
    """PATH with sbatch/srun/scontrol stand-ins and `stica`/`torchrun` of this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = shlex.quote(sys.executable)
    scripts = {
        "sbatch": SBATCH.format(python=sys.executable),
        "srun": SRUN,
        "scontrol": SCONTROL,
        "stica": f'#!/bin/sh\nexec {py} -m stica "$@"\n',
        "torchrun": f'#!/bin/sh\nexec {py} -m torch.distributed.run "$@"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "spool").mkdir()
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "SBATCH_SPOOL": str(tmp_path / "spool"),
        "OMP_NUM_THREADS": "1",
    }


def _usage(script: Path) -> list[str]:
    """The command lines a template's header tells the user to type."""
    return [
        line.lstrip("#").strip()
        for line in script.read_text().splitlines()
        if re.match(r"#\s+(\S+=\$\()?sbatch ", line)
    ]


def _directives(script: Path) -> dict[str, str]:
    out = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --") :].partition("=")
            out[key] = value
    return out


def test_preprocess_template_array_then_merge(inputs, slurm_env, tmp_path):
    root, single = inputs
    script = SLURM / "preprocess.sbatch"
    assert {"cpus-per-task", "time", "output"} <= set(_directives(script))
    assert "array" not in _directives(script)  # given at submission: one script, two jobs
    usage = _usage(script)
    assert len(usage) == 2 and "--array=0-63" in usage[0] and "--dependency" in usage[1]
    store = tmp_path / "k.store"
    params = tmp_path / "params.yaml"  # the slices' params: the test's small frames
    params.write_text("preprocess:\n  fps: 10.0\n  short_side: 32\n  videos_per_shard: 2\n")
    slices, merge = (line.replace("/data/kinetics400", shlex.quote(str(root))) for line in usage)
    commands = [
        slices.replace("--array=0-63", "--array=0-2").replace(
            "/shared/k400.store", f"{shlex.quote(str(store))} --params {shlex.quote(str(params))}"
        ),
        # the merge job gets no stica options: the parts carry their params
        merge.replace("/shared/k400.store", shlex.quote(str(store))),
    ]
    r = subprocess.run(
        ["bash", "-euc", "\n".join(commands)],
        cwd=REPO,
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "part 3 of 3" in r.stderr and "merged 3 parts" in r.stderr
    assert "videos" in r.stdout  # `stica info` of the finished store
    assert fx.store_content(store) == fx.store_content(single)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_pretrain_template_two_nodes(tiny_store, tiny_params_file, slurm_env, tmp_path):
    """The multi-node launch as written: srun starts one torchrun agent per node, the agents
    meet at the c10d rendezvous on the first node, 2 gloo processes train the tiny profile."""
    script = SLURM / "pretrain.sbatch"
    directives = _directives(script)
    assert directives["ntasks-per-node"] == "1" and "nodes" in directives
    (usage,) = _usage(script)
    assert "--nodes=8" in usage
    ckpt = tmp_path / "pretrain.pt"
    command = (
        usage.replace("--nodes=8", "--nodes=2")
        .replace("/shared/k400.store", shlex.quote(str(tiny_store)))
        .replace("models/pretrain.pt", shlex.quote(str(ckpt)))
        .replace("profiles/paper.yaml", shlex.quote(str(tiny_params_file)))
    )
    env = {**slurm_env, "NPROC_PER_NODE": "1", "MASTER_PORT": str(free_port())}
    r = subprocess.run(
        ["bash", "-euc", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 process(es)" in r.stderr
    from stica.train.checkpoint import load_checkpoint

    final = load_checkpoint(ckpt, kind="pretrain")
    assert final["final"] and final["step"] == 4  # 16 clips / batch 8 x 2 epochs
