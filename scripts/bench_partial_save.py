"""Wall time and bytes of extract-features saving its progress for N chunks at the paper
profile's sizes (64 videos x 10 clips x 512-D float16 clip features, 64 x 512 float32 video and
audio features), the partial folder of this checkout (one file per chunk) against an older
features.py's one partial file (every finished chunk rewritten after each chunk), in one run.

    git show 6addc03:stica/eval/features.py > /tmp/old_features.py
    OMP_NUM_THREADS=1 python scripts/bench_partial_save.py 500 /tmp/old_features.py

The older layout writes N (N + 1) / 2 chunks in all: 500 chunks are ~115 GB of writes.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import stica.eval.features as new

CHUNK_VIDEOS, CLIPS, DIM = 64, 10, 512


def main(n: int, old_source: str) -> None:
    spec = importlib.util.spec_from_file_location("old_features", old_source)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    rng = np.random.default_rng(0)
    video = rng.standard_normal((CHUNK_VIDEOS, DIM), dtype=np.float32)
    audio = rng.standard_normal((CHUNK_VIDEOS, DIM), dtype=np.float32)
    clips = rng.standard_normal((CHUNK_VIDEOS, CLIPS, DIM), dtype=np.float32).astype(np.float16)
    fingerprint = {"checkpoint": "models/pretrain.pt", "manifest_hash": "0" * 64}

    def run_new(root: Path) -> tuple[list[float], int]:
        folder = root / ".new.h5.partial"
        folder.mkdir()
        new._write_atomic(folder / new.FINGERPRINT, lambda tmp: tmp.write_text(str(fingerprint)))
        times, written = [], (folder / new.FINGERPRINT).stat().st_size
        for i in range(n):
            start = time.perf_counter()
            new._save_chunk(folder, CHUNK_VIDEOS * i, video, audio, clips)
            times.append(time.perf_counter() - start)
            written += new._chunk_path(folder, CHUNK_VIDEOS * i).stat().st_size
        return times, written

    def run_old(root: Path) -> tuple[list[float], int]:
        path = root / ".old.h5.partial"
        finished: tuple[list, list, list] = ([], [], [])
        times, written = [], 0
        for _ in range(n):
            for kept, x in zip(finished, (video, audio, clips), strict=True):
                kept.append(x)
            start = time.perf_counter()
            old._save_partial(path, fingerprint, *finished)
            times.append(time.perf_counter() - start)
            written += path.stat().st_size
        return times, written

    root = Path(tempfile.mkdtemp())
    try:
        for name, run in (("new: one file per chunk", run_new), ("old: one file", run_old)):
            times, written = run(root)
            print(
                f"{name}: {n} chunks, saves {sum(times):.2f} s in all (mean of the last 10: "
                f"{np.mean(times[-10:]) * 1e3:.1f} ms), {written / 1e9:.3f} GB written "
                f"({written / n / 1e6:.3f} MB per chunk)",
                flush=True,
            )
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
