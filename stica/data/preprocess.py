"""``stica preprocess``: decode every input once into the HDF5 store (see :mod:`stica.data.store`).

Crash safety and resumability come from a fixed plan: every file under the input root (minus
the layout's annotation files) is sorted and cut into chunks of ``videos_per_shard``; chunk k is
always written, whole, by one worker to ``shard-k.h5`` (temp name, fsync, rename). A rerun keeps
every shard whose recorded inputs and params match the plan and rebuilds the others; the
manifest and ``meta.json`` (the "finished" marker) are written only after all shards exist. So a
killed run, rerun, ends with the same store as an uninterrupted one.

Every input ends in exactly one list: the manifest (stored, with ``notes`` on what decoding
repaired), ``rejected.jsonl`` (holds video, could not be stored: corrupt, too short, ...) or
``skipped.jsonl`` (not a video: text, audio only, a still picture), each with a one-line reason.

On a cluster, ``num_shards``/``shard_index`` give one machine a contiguous slice of the chunks:
it writes those shards and a ``part-I-of-N.json`` marker; :func:`merge_stores` checks that the
parts cover the plan and writes the manifest and ``meta.json`` exactly as a one-machine run does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

import stica
from stica.config import PreprocessConfig, to_dict
from stica.data import store as st
from stica.data.decode import DecodeError, decode_media, probe_input
from stica.data.layouts import Discovery, Item, discover
from stica.errors import SticaError
from stica.logs import get_logger, setup_logging

log = get_logger("preprocess")
MAX_LOGGED_REJECTS = 20  # the full lists are in rejected.jsonl / skipped.jsonl
PART_FORMAT = "stica-store-part"


@dataclass
class PreprocessResult:
    stored: int
    rejected: int
    without_audio: int
    shards_built: int = 0
    shards_kept: int = 0
    wall_seconds: float = 0.0
    video_seconds: float = 0.0  # seconds of media decoded in this run (kept shards excluded)
    skipped: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    part: str = ""  # "part 2 of 8" for a cluster slice (counts are the slice's)

    def summary_line(self) -> str:
        line = (
            f"stored {self.stored} / rejected {self.rejected} / skipped {self.skipped}"
            f" / without audio {self.without_audio}"
        )
        details = [
            f"{kind}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
            for kind, reasons in (
                ("rejected", self.rejected_by_reason),
                ("skipped", self.skipped_by_reason),
            )
            if reasons
        ]
        if details:
            line += f" ({'; '.join(details)})"
        return f"{self.part}: {line}" if self.part else line


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
        raise DecodeError(f"timed out (after {seconds:g} s, preprocess.timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _unexpected(e: Exception) -> str:
    return " ".join(f"unexpected {e.__class__.__name__}: {e}".split())[:200]


def input_stamps(input_dir: Path, paths: list[str]) -> list[str]:
    """``path|size|mtime_ns`` of every input: a shard is kept on a rerun only if its inputs are
    the same files, unchanged (a regenerated demo set reuses the same paths)."""
    stamps = []
    for path in paths:
        try:
            stat = (Path(input_dir) / path).stat()
            stamps.append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}")
        except OSError:
            stamps.append(f"{path}|missing")
    return stamps


def _build_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Decode one chunk of inputs and write its shard. Runs in a worker; never raises for a bad
    input file: each becomes a row, a rejected entry or a skipped entry."""
    cfg = task["cfg"]
    root = Path(task["input_root"])
    sink = encode_jpeg(cfg["jpeg_quality"])
    rows, rejected, skipped, videos = [], [], [], []
    seconds = 0.0
    for vid, entry in task["items"]:
        path = entry["path"]
        if "unplaced" in entry:
            # a file the layout cannot place: a video there is lost (rejected with the
            # layout's reason), anything else is simply not an input (skipped: what it is)
            try:
                with _time_limit(task["timeout"]):
                    probe_input(root / path, task["audio_only"])
                rejected.append({"path": path, "reason": entry["unplaced"]})
            except DecodeError as e:
                (skipped if e.skipped else rejected).append({"path": path, "reason": str(e)})
            except Exception as e:  # noqa: BLE001 - one odd file must never stop the run
                rejected.append({"path": path, "reason": _unexpected(e)})
            continue
        try:
            with _time_limit(task["timeout"]):
                decoded = decode_media(
                    root / path,
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
            (skipped if e.skipped else rejected).append({"path": path, "reason": str(e)})
            continue
        except Exception as e:  # noqa: BLE001 - one odd file must never stop the run
            rejected.append({"path": path, "reason": _unexpected(e)})
            continue
        seconds += decoded.duration
        rows.append(
            {
                "id": vid,
                "path": path,
                "label": entry["label"],
                "label_name": entry["label_name"],
                "split": entry["splits"][0] if entry["splits"] else "",
                "splits": list(entry["splits"]),
                "duration": decoded.duration,
                "num_frames": decoded.num_frames,
                "has_audio": decoded.has_audio,
                "shard": task["shard"],
                "index": len(videos),
                "notes": list(decoded.notes),
            }
        )
        videos.append((decoded.frames, decoded.audio))
    inputs = [entry["path"] for _, entry in task["items"]]
    attrs = {
        "inputs": inputs,
        # the stamps as the plan saw them (before decoding): a file rewritten since gets rebuilt
        "input_stamps": task["input_stamps"],
        "plan_key": task["plan_key"],
        "rows": rows,
        "rejected": rejected,
        "skipped": skipped,
    }
    st.write_shard(Path(task["out"]) / task["shard"], videos, attrs)
    return {"shard": task["shard"], "count": len(task["items"]), "seconds": seconds}


@dataclass
class _Plan:
    """Everything a run derives from the input folder and the params, the same on every
    machine: the chunks (shard name -> [(id or None, entry)]) and what goes into ``meta.json``."""

    key: str  # params + format: a shard built under another key is rebuilt
    digest: str  # key + every chunk's inputs: parts of one cluster run must agree on it
    names: list[str]
    chunks: list[list[tuple[str | None, dict[str, Any]]]]
    header: dict[str, Any]  # layout, classes, splits and the discovery's own rejects/skips


def _make_plan(found: Discovery, params: dict[str, Any], per_shard: int) -> _Plan:
    key = hashlib.sha256(
        json.dumps(
            [st.FORMAT_VERSION, params, found.layout, found.audio_only], sort_keys=True
        ).encode()
    ).hexdigest()
    ids = assign_ids(found.items)
    entries: list[tuple[str | None, dict[str, Any]]] = [
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
    entries += [(None, {"path": path, "unplaced": reason}) for path, reason in found.unplaced]
    entries.sort(key=lambda e: e[1]["path"])
    chunks = [entries[i : i + per_shard] for i in range(0, len(entries), per_shard)]
    names = [st.shard_name(k) for k in range(len(chunks))]
    digest = hashlib.sha256(
        json.dumps([key, [[e["path"] for _, e in c] for c in chunks]]).encode()
    ).hexdigest()
    header = {
        "layout": found.layout,
        "classes": list(found.classes),
        "num_splits": found.num_splits,
        "audio_only": found.audio_only,
        "problems": [list(p) for p in found.problems],
        "skipped": [list(p) for p in found.skipped],
    }
    return _Plan(key, digest, names, chunks, header)


def part_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.json"


def _slice(num_chunks: int, num_shards: int, shard_index: int) -> range:
    """The contiguous chunks of cluster slice ``shard_index`` (sizes differ by at most one)."""
    return range(
        num_chunks * shard_index // num_shards, num_chunks * (shard_index + 1) // num_shards
    )


def preprocess(
    input_dir: str | Path,
    out_dir: str | Path,
    cfg: PreprocessConfig,
    workers: int | None = None,
    progress: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
) -> PreprocessResult:
    """Build (or finish, or verify) the store ``out_dir`` from ``input_dir``.

    With ``num_shards`` > 1, build only slice ``shard_index`` of the plan into ``out_dir`` (a
    partial store: shards + a part marker); :func:`merge_stores` finishes the store.
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise SticaError(f"input folder not found: {input_dir}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SticaError(f"--out exists and is not a folder: {out_dir}")
    if num_shards < 1:
        raise SticaError(f"--num-shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise SticaError(f"--shard-index must be in [0, {num_shards - 1}], got {shard_index}")
    partial = num_shards > 1
    part = part_name(shard_index, num_shards)
    out_dir.mkdir(parents=True, exist_ok=True)
    # parts of a cluster run may share one folder: each logs to its own file
    setup_logging(out_dir / (part.replace(".json", ".log") if partial else st.LOG))
    t_start = time.perf_counter()
    workers = cfg.workers if workers is None else workers
    if workers < 0:
        raise SticaError("--workers must be >= 0")

    # a store written inside its own input folder must not become input of the next run
    found = discover(input_dir, cfg.layout, cfg.test_fraction, exclude=(out_dir,))
    log.info(
        "preprocess %s -> %s: layout %s, %d inputs, %d other files, %d classes%s",
        input_dir,
        out_dir,
        found.layout,
        len(found.items),
        len(found.unplaced),
        len(found.classes),
        f", {len(found.sidecars)} annotation files read" if found.sidecars else "",
    )
    params = store_params(cfg)
    plan = _make_plan(found, params, cfg.videos_per_shard)
    mine = _slice(len(plan.names), num_shards, shard_index) if partial else range(len(plan.names))

    # the store is unfinished from now until meta.json is rewritten
    (out_dir / st.META).unlink(missing_ok=True)
    (out_dir / part).unlink(missing_ok=True)
    if partial:  # other parts may be writing their own temp files in this folder right now
        stale = [t for k in mine for t in out_dir.glob(f"{plan.names[k]}.*.tmp")]
    else:
        stale = list(out_dir.glob("*.tmp"))
        for old in out_dir.glob("shard-*.h5"):
            if old.name not in plan.names:
                old.unlink()
    for path in stale:
        path.unlink(missing_ok=True)

    tasks, kept = [], 0
    for k in mine:
        name, chunk = plan.names[k], plan.chunks[k]
        attrs = st.read_shard_attrs(out_dir / name)
        inputs = [entry["path"] for _, entry in chunk]
        stamps = input_stamps(input_dir, inputs)
        if (
            attrs
            and attrs.get("plan_key") == plan.key
            and attrs.get("inputs") == inputs
            and attrs.get("input_stamps") == stamps
        ):
            kept += 1
            continue
        tasks.append(
            {
                "shard": name,
                "items": chunk,
                "input_stamps": stamps,
                "out": str(out_dir),
                "input_root": str(input_dir),
                "cfg": params,
                "timeout": cfg.timeout,
                "plan_key": plan.key,
                "audio_only": found.audio_only,
            }
        )
    if kept:
        log.info("resuming: %d of %d shards already complete", kept, len(mine))

    seconds = _run_tasks(tasks, workers, progress, total=sum(len(t["items"]) for t in tasks))
    timing = {
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "video_seconds": round(seconds, 3),
        "videos_decoded": sum(len(t["items"]) for t in tasks),
        "shards_built": len(tasks),
        "shards_kept": kept,
        "workers": workers,
        "input_dir": str(input_dir.resolve()),
    }
    if partial:
        names = [plan.names[k] for k in mine]
        result = _tally(out_dir, names, {"problems": [], "skipped": []})
        result.part = f"part {shard_index + 1} of {num_shards}"
        marker = {
            "format": PART_FORMAT,
            "format_version": st.FORMAT_VERSION,
            "plan_key": plan.key,
            "plan_digest": plan.digest,
            "num_shards": num_shards,
            "shard_index": shard_index,
            "shards": names,
            "all_shards": plan.names,
            "header": plan.header,
            "params": params,
            "timing": timing,
        }
        st.write_text_atomic(out_dir / part, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    else:
        result = _finish(out_dir, plan.header, plan.names, params)
        st.write_text_atomic(out_dir / st.TIMING, json.dumps(timing, indent=2) + "\n")
        for marker in out_dir.glob("part-*-of-*.json"):  # an earlier cluster run's, now stale
            marker.unlink()
    result.shards_built, result.shards_kept = len(tasks), kept
    result.wall_seconds, result.video_seconds = timing["wall_seconds"], seconds
    log.info(result.summary_line())
    return result


def _run_tasks(tasks, workers: int, progress: bool, total: int) -> float:
    seconds = 0.0
    bar = tqdm(total=total, unit="file", desc="preprocess", disable=not progress or not total)
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


def _collect(out_dir: Path, names: list[str], header: dict[str, Any]):
    """Rows, rejected and skipped entries of the shards ``names`` plus the discovery's own."""
    rows = []
    rejected = [{"path": p, "reason": r} for p, r in header["problems"]]
    skipped = [{"path": p, "reason": r} for p, r in header["skipped"]]
    for name in names:
        attrs = st.read_shard_attrs(out_dir / name)
        if attrs is None:
            raise SticaError(f"shard missing after preprocessing: {out_dir / name}")
        rows.extend(attrs["rows"])
        rejected.extend(attrs["rejected"])
        skipped.extend(attrs.get("skipped", []))
    rows.sort(key=lambda r: r["id"])
    rejected.sort(key=lambda r: (r["path"], r["reason"]))
    skipped.sort(key=lambda r: (r["path"], r["reason"]))
    return rows, rejected, skipped


def _result(rows, rejected, skipped) -> PreprocessResult:
    pairs = lambda entries: [(e["path"], e["reason"]) for e in entries]  # noqa: E731
    return PreprocessResult(
        stored=len(rows),
        rejected=len(rejected),
        without_audio=sum(not r["has_audio"] for r in rows),
        skipped=len(skipped),
        rejected_by_reason=st.count_reasons(pairs(rejected)),
        skipped_by_reason=st.count_reasons(pairs(skipped)),
    )


def _tally(out_dir: Path, names: list[str], header: dict[str, Any]) -> PreprocessResult:
    return _result(*_collect(out_dir, names, header))


def _finish(out_dir: Path, header: dict[str, Any], names: list[str], params) -> PreprocessResult:
    rows, rejected, skipped = _collect(out_dir, names, header)
    dump = lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True)  # noqa: E731
    st.write_text_atomic(out_dir / st.MANIFEST, "".join(dump(r) + "\n" for r in rows))
    st.write_text_atomic(out_dir / st.REJECTED, "".join(dump(r) + "\n" for r in rejected))
    st.write_text_atomic(out_dir / st.SKIPPED, "".join(dump(r) + "\n" for r in skipped))
    for r in rejected[:MAX_LOGGED_REJECTS]:
        log.info("rejected %s: %s", r["path"], r["reason"])
    if len(rejected) > MAX_LOGGED_REJECTS:
        log.info(
            "... %d more rejected inputs in %s", len(rejected) - MAX_LOGGED_REJECTS, st.REJECTED
        )
    for r in rows:
        for note in r["notes"]:
            log.info("stored %s: %s", r["path"], note)
    meta = {
        "format": st.FORMAT,
        "format_version": st.FORMAT_VERSION,
        "fps": params["fps"],
        "sample_rate": params["sample_rate"],
        "short_side": params["short_side"],
        "layout": header["layout"],
        "classes": list(header["classes"]),
        "num_splits": header["num_splits"],
        "audio_only": header["audio_only"],
        "params": params,
        "version": stica.__version__,
        "shards": names,
    }
    st.write_text_atomic(out_dir / st.META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return _result(rows, rejected, skipped)


# ------------------------------------------------------------------------------------------------
# Cluster runs: joining the parts
# ------------------------------------------------------------------------------------------------


def _read_part(path: Path) -> dict[str, Any]:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
        if marker.get("format") != PART_FORMAT:
            raise ValueError("wrong format tag")
        keys = ("plan_digest", "num_shards", "shard_index", "shards", "all_shards", "header")
        if missing := [k for k in keys if k not in marker]:
            raise KeyError(", ".join(missing))
    except (OSError, ValueError, KeyError) as e:
        raise SticaError(f"corrupt part marker {path}: {e}") from None
    return marker


def partial_store_summary(folder: str | Path) -> dict[str, Any]:
    """What ``stica info`` says about a folder of cluster slices not merged yet."""
    folder = Path(folder)
    markers = [_read_part(p) for p in sorted(folder.glob("part-*-of-*.json"))]
    count = markers[0]["num_shards"]
    done = {m["shard_index"] for m in markers if m["num_shards"] == count}
    return {
        "kind": "partial store (cluster slices, not merged)",
        "path": str(folder),
        "parts_done": len(done),
        "parts": count,
        "missing_parts": sorted(set(range(count)) - done),
        "shards_done": sum(len(m["shards"]) for m in markers),
        "shards": len(markers[0]["all_shards"]),
        "next": f"stica merge-stores {folder} --out {folder}",
    }


def _place_shard(src: Path, dst: Path) -> None:
    """Put a finished shard at ``dst``: a hard link where the filesystem allows, else a copy
    (temp name, fsync, rename, as every shard write)."""
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, dst)


def merge_stores(part_dirs: list[str | Path], out_dir: str | Path) -> PreprocessResult:
    """Join the partial stores in ``part_dirs`` (one folder shared by every part, or one folder
    per part) into the finished store ``out_dir``, identical to a one-machine run's."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SticaError(f"--out exists and is not a folder: {out_dir}")
    found: list[tuple[Path, dict[str, Any]]] = []
    seen_dirs = set()
    for folder in map(Path, part_dirs):
        if not folder.is_dir():
            raise SticaError(f"partial store not found: {folder}")
        if folder.resolve() not in seen_dirs:
            seen_dirs.add(folder.resolve())
            found += [(p, _read_part(p)) for p in sorted(folder.glob("part-*-of-*.json"))]
    if not found:
        raise SticaError(
            "no partial stores (part-*-of-*.json) in "
            + ", ".join(str(p) for p in part_dirs)
            + ": run `stica preprocess ... --num-shards N --shard-index I` first"
        )
    first = found[0][1]
    count = first["num_shards"]
    markers: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path, marker in found:
        if marker["plan_digest"] != first["plan_digest"] or marker["num_shards"] != count:
            raise SticaError(
                f"{path} belongs to another run than {found[0][0]} (different inputs, params or"
                " --num-shards): rerun every part with the same input folder and params"
            )
        index = marker["shard_index"]
        if index in markers:
            raise SticaError(f"part {index} found twice: {markers[index][0]} and {path}")
        markers[index] = (path, marker)
    missing = sorted(set(range(count)) - set(markers))
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise SticaError(
            f"{len(missing)} of {count} parts not finished (shard index {shown}):"
            " rerun those array tasks, finished shards are kept"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(out_dir / st.LOG)
    t_start = time.perf_counter()
    names = first["all_shards"]
    (out_dir / st.META).unlink(missing_ok=True)
    for path, marker in markers.values():
        for name in marker["shards"]:
            src = path.parent / name
            attrs = st.read_shard_attrs(src)
            if attrs is None or attrs.get("plan_key") != marker["plan_key"]:
                raise SticaError(f"shard missing or from another run: {src} (rerun that part)")
            if src.resolve() != (out_dir / name).resolve():
                _place_shard(src, out_dir / name)
    for old in out_dir.glob("shard-*.h5"):
        if old.name not in names:
            old.unlink()
    result = _finish(out_dir, first["header"], names, first["params"])
    timings = [m["timing"] for _, m in markers.values()]
    timing = {
        key: round(sum(t[key] for t in timings), 3)
        for key in (
            "wall_seconds",
            "video_seconds",
            "videos_decoded",
            "shards_built",
            "shards_kept",
        )
    }
    timing.update(
        parts=count,
        workers=timings[0]["workers"],
        input_dir=timings[0]["input_dir"],
        merge_seconds=round(time.perf_counter() - t_start, 3),
    )
    st.write_text_atomic(out_dir / st.TIMING, json.dumps(timing, indent=2) + "\n")
    for path, _ in markers.values():  # the store is finished: the parts' markers are spent
        if path.parent.resolve() == out_dir.resolve():
            path.unlink()
    log.info("merged %d parts into %s", count, out_dir)
    log.info(result.summary_line())
    return result
