"""``stica preprocess``: decode every input once into the HDF5 store (see :mod:`stica.data.store`).

Crash safety and resumability come from a fixed plan: inputs are sorted and cut into chunks of
``videos_per_shard``; chunk k is always written, whole, by one worker to ``shard-k.h5`` (temp
name, fsync, rename). A rerun keeps every shard whose recorded inputs and params match the plan
and rebuilds the others; the manifest and ``meta.json`` (the "finished" marker) are written only
after all shards exist. So a killed run, rerun, ends with the same store as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

import stica
from stica.config import PreprocessConfig, to_dict
from stica.data import store as st
from stica.data.decode import DecodeError, decode_media
from stica.data.layouts import Discovery, Item, discover
from stica.errors import SticaError
from stica.logs import get_logger, setup_logging

log = get_logger("preprocess")
MAX_LOGGED_REJECTS = 20  # the full list is in rejected.jsonl


@dataclass
class PreprocessResult:
    stored: int
    rejected: int
    without_audio: int
    shards_built: int
    shards_kept: int
    wall_seconds: float
    video_seconds: float  # seconds of media decoded in this run (kept shards excluded)

    def summary_line(self) -> str:
        return (
            f"stored {self.stored} / rejected {self.rejected} / without audio {self.without_audio}"
        )


def store_params(cfg: PreprocessConfig) -> dict[str, Any]:
    """The params that determine the store's content (``workers`` and the hang guard
    ``timeout`` only change speed and pathological cases)."""
    params = to_dict(cfg)
    params.pop("workers", None)
    params.pop("timeout", None)
    return params


def assign_ids(items: list[Item]) -> list[str]:
    """Ids are relative paths without extension; the extension is kept where that collides."""
    stems = [
        it.path.rsplit(".", 1)[0] if "." in it.path.rsplit("/", 1)[-1] else it.path for it in items
    ]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else it.path for s, it in zip(stems, items, strict=True)]


def encode_jpeg(quality: int):
    def sink(rgb: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    return sink


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Reject an input whose decoding hangs (SIGALRM; only where signals can be used: the main
    thread of a Unix process, which is where pool workers and the CLI run tasks)."""
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise DecodeError(f"timed out after {seconds:g} s (preprocess.timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _build_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Decode one chunk of inputs and write its shard. Runs in a worker; never raises for a bad
    input file: each either becomes a row or a rejected entry."""
    cfg = task["cfg"]
    root = Path(task["input_root"])
    sink = encode_jpeg(cfg["jpeg_quality"])
    rows, rejected, videos = [], [], []
    seconds = 0.0
    for vid, item in task["items"]:
        try:
            with _time_limit(task["timeout"]):
                decoded = decode_media(
                    root / item["path"],
                    fps=cfg["fps"],
                    short_side=cfg["short_side"],
                    sample_rate=cfg["sample_rate"],
                    max_duration=cfg["max_duration"],
                    audio_only=task["audio_only"],
                    frame_sink=sink,
                )
            if decoded.duration < cfg["min_duration"]:
                raise DecodeError(
                    f"too short ({decoded.duration:.2f} s < min_duration {cfg['min_duration']} s)"
                )
        except DecodeError as e:
            rejected.append({"path": item["path"], "reason": str(e)})
            continue
        except Exception as e:  # noqa: BLE001 - one odd file must never stop the run
            reason = " ".join(f"unexpected {e.__class__.__name__}: {e}".split())[:200]
            rejected.append({"path": item["path"], "reason": reason})
            continue
        seconds += decoded.duration
        rows.append(
            {
                "id": vid,
                "path": item["path"],
                "label": item["label"],
                "label_name": item["label_name"],
                "split": item["splits"][0] if item["splits"] else "",
                "splits": list(item["splits"]),
                "duration": decoded.duration,
                "num_frames": decoded.num_frames,
                "has_audio": decoded.has_audio,
                "shard": task["shard"],
                "index": len(videos),
            }
        )
        videos.append((decoded.frames, decoded.audio))
    attrs = {
        "inputs": [item["path"] for _, item in task["items"]],
        "plan_key": task["plan_key"],
        "rows": rows,
        "rejected": rejected,
    }
    st.write_shard(Path(task["out"]) / task["shard"], videos, attrs)
    return {"shard": task["shard"], "count": len(task["items"]), "seconds": seconds}


def preprocess(
    input_dir: str | Path,
    out_dir: str | Path,
    cfg: PreprocessConfig,
    workers: int | None = None,
    progress: bool = True,
) -> PreprocessResult:
    """Build (or finish, or verify) the store ``out_dir`` from ``input_dir``."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise SticaError(f"input folder not found: {input_dir}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SticaError(f"--out exists and is not a folder: {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(out_dir / st.LOG)
    t_start = time.perf_counter()
    workers = cfg.workers if workers is None else workers
    if workers < 0:
        raise SticaError("--workers must be >= 0")

    found = discover(input_dir, cfg.layout, cfg.test_fraction)
    log.info(
        "preprocess %s -> %s: layout %s, %d inputs, %d classes",
        input_dir,
        out_dir,
        found.layout,
        len(found.items),
        len(found.classes),
    )
    # the store is unfinished from now until meta.json is rewritten
    (out_dir / st.META).unlink(missing_ok=True)
    for stale in out_dir.glob("*.tmp"):
        stale.unlink()

    params = store_params(cfg)
    plan_key = hashlib.sha256(
        json.dumps(
            [st.FORMAT_VERSION, params, found.layout, found.audio_only], sort_keys=True
        ).encode()
    ).hexdigest()
    ids = assign_ids(found.items)
    pairs = [
        (
            vid,
            {
                "path": it.path,
                "label": it.label,
                "label_name": it.label_name,
                "splits": list(it.splits),
            },
        )
        for vid, it in zip(ids, found.items, strict=True)
    ]
    per = cfg.videos_per_shard
    chunks = [pairs[i : i + per] for i in range(0, len(pairs), per)]
    names = [st.shard_name(k) for k in range(len(chunks))]
    for old in out_dir.glob("shard-*.h5"):
        if old.name not in names:
            old.unlink()

    tasks, kept = [], 0
    for name, chunk in zip(names, chunks, strict=True):
        attrs = st.read_shard_attrs(out_dir / name)
        inputs = [item["path"] for _, item in chunk]
        if attrs and attrs.get("plan_key") == plan_key and attrs.get("inputs") == inputs:
            kept += 1
            continue
        tasks.append(
            {
                "shard": name,
                "items": chunk,
                "out": str(out_dir),
                "input_root": str(input_dir),
                "cfg": params,
                "timeout": cfg.timeout,
                "plan_key": plan_key,
                "audio_only": found.audio_only,
            }
        )
    if kept:
        log.info("resuming: %d of %d shards already complete", kept, len(chunks))

    seconds = _run_tasks(tasks, workers, progress, total=sum(len(t["items"]) for t in tasks))
    result = _finish(out_dir, found, names, params)
    result.shards_built, result.shards_kept = len(tasks), kept
    result.wall_seconds = time.perf_counter() - t_start
    result.video_seconds = seconds
    st.write_text_atomic(
        out_dir / st.TIMING,
        json.dumps(
            {
                "wall_seconds": round(result.wall_seconds, 3),
                "video_seconds": round(seconds, 3),
                "videos_decoded": sum(len(t["items"]) for t in tasks),
                "shards_built": len(tasks),
                "shards_kept": kept,
                "workers": workers,
                "input_dir": str(input_dir.resolve()),
            },
            indent=2,
        )
        + "\n",
    )
    log.info(result.summary_line())
    return result


def _run_tasks(tasks, workers: int, progress: bool, total: int) -> float:
    seconds = 0.0
    bar = tqdm(total=total, unit="video", desc="preprocess", disable=not progress or not total)
    try:
        if workers == 0 or len(tasks) <= 1:
            results = map(_build_shard, tasks)
            for res in results:
                seconds += res["seconds"]
                bar.update(res["count"])
        else:
            # spawn: no inherited HDF5/FFmpeg state, same behaviour on every platform
            ctx = mp.get_context("spawn")
            with ctx.Pool(min(workers, len(tasks)), maxtasksperchild=8) as pool:
                for res in pool.imap_unordered(_build_shard, tasks):
                    seconds += res["seconds"]
                    bar.update(res["count"])
    finally:
        bar.close()
    return seconds


def _finish(out_dir: Path, found: Discovery, names: list[str], params) -> PreprocessResult:
    rows, rejected = [], [{"path": p, "reason": r} for p, r in found.problems]
    for name in names:
        attrs = st.read_shard_attrs(out_dir / name)
        if attrs is None:
            raise SticaError(f"shard missing after preprocessing: {out_dir / name}")
        rows.extend(attrs["rows"])
        rejected.extend(attrs["rejected"])
    rows.sort(key=lambda r: r["id"])
    rejected.sort(key=lambda r: (r["path"], r["reason"]))
    dump = lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True)  # noqa: E731
    st.write_text_atomic(out_dir / st.MANIFEST, "".join(dump(r) + "\n" for r in rows))
    st.write_text_atomic(out_dir / st.REJECTED, "".join(dump(r) + "\n" for r in rejected))
    for r in rejected[:MAX_LOGGED_REJECTS]:
        log.info("rejected %s: %s", r["path"], r["reason"])
    if len(rejected) > MAX_LOGGED_REJECTS:
        log.info(
            "... %d more rejected inputs in %s", len(rejected) - MAX_LOGGED_REJECTS, st.REJECTED
        )
    meta = {
        "format": st.FORMAT,
        "format_version": st.FORMAT_VERSION,
        "fps": params["fps"],
        "sample_rate": params["sample_rate"],
        "short_side": params["short_side"],
        "layout": found.layout,
        "classes": list(found.classes),
        "num_splits": found.num_splits,
        "audio_only": found.audio_only,
        "params": params,
        "version": stica.__version__,
        "shards": names,
    }
    st.write_text_atomic(out_dir / st.META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return PreprocessResult(
        stored=len(rows),
        rejected=len(rejected),
        without_audio=sum(not r["has_audio"] for r in rows),
        shards_built=0,
        shards_kept=0,
        wall_seconds=0.0,
        video_seconds=0.0,
    )
