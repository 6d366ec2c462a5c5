"""Dataset layouts: turn an input folder into a sorted list of items with labels and splits.

Supported (``layout: auto`` detects them in this order):

- ``esc50``: ``meta/esc50.csv`` + ``audio/*.wav``; 5 folds (fold k is the test set of split k);
  audio-only inputs.
- ``ucf101``: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt`` (in the root or in
  ``ucfTrainTestlist/``); videos in class folders under the root (or ``UCF-101/``).
- ``hmdb51``: ``<class>_test_splitN.txt`` (root or any direct sub-folder); 1 = train, 2 = test,
  0 = unused; videos in class folders.
- ``kinetics``: CSV files with ``label,youtube_id,time_start,time_end,split`` in the root;
  videos named ``ID_000010_000020.mp4`` or ``ID.mp4`` anywhere below the root (class folders,
  split folders or flat). ``val``/``validate`` rows form the test split.
- ``dcase2014``: class folders of audio files (audio-only inputs).
- ``generic``: ``ROOT/CLASS/**/video`` (or ``ROOT/train/CLASS`` + ``ROOT/test/CLASS``); without
  split folders a stable hash of the relative path puts ``test_fraction`` of the videos in test.

Paths that cannot be listed (unreadable folders, symlink loops) and files named by a split list
but absent are returned as ``problems`` (path, reason) so they end up in the rejected list.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from stica.errors import SticaError

VIDEO_EXTS = frozenset(
    [
        ".mp4",
        ".avi",
        ".mkv",
        ".webm",
        ".mov",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
        ".ts",
        ".mts",
        ".ogv",
    ]
)
AUDIO_EXTS = frozenset([".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus"])
LAYOUTS = ("generic", "ucf101", "hmdb51", "kinetics", "esc50", "dcase2014")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


@dataclass(frozen=True)
class Item:
    path: str  # relative to the input root, POSIX separators
    label: int  # -1 when unlabeled
    label_name: str
    splits: tuple[str, ...]  # "train" | "test" | "" per official split/fold


@dataclass
class Discovery:
    layout: str
    classes: tuple[str, ...]
    items: list[Item]
    num_splits: int
    audio_only: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# Walking the file tree safely
# ------------------------------------------------------------------------------------------------


def walk_files(root: Path, exts: frozenset[str], problems: list[tuple[str, str]]) -> list[str]:
    """Relative POSIX paths of files below ``root`` with an extension in ``exts``, sorted.

    Follows directory symlinks once (a folder reached again through a link is reported as a
    symlink loop), and reports unreadable folders and dangling/looping file links in ``problems``.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path, rel: str) -> None:
        try:
            st = folder.stat()
        except OSError as e:
            problems.append((rel or ".", _os_reason(e)))
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            problems.append((rel or ".", "symlink loop (folder already visited)"))
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            problems.append((rel or ".", f"unreadable directory: {_os_reason(e)}"))
            return
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = not is_dir and entry.is_file(follow_symlinks=True)
            except OSError as e:
                problems.append((child_rel, _os_reason(e)))
                continue
            if is_dir:
                if not entry.name.startswith("."):
                    visit(Path(entry.path), child_rel)
            elif Path(entry.name).suffix.lower() in exts:
                if is_file:
                    found.append(child_rel)
                elif entry.is_symlink():
                    problems.append((child_rel, _link_reason(Path(entry.path))))

    visit(root, "")
    return sorted(found)


def _os_reason(e: OSError) -> str:
    if e.errno == 40:  # ELOOP
        return "symlink loop"
    return " ".join((e.strerror or str(e)).split())


def _link_reason(path: Path) -> str:
    try:
        path.stat()
    except OSError as e:
        return "symlink loop" if e.errno == 40 else "broken symlink"
    return "not a regular file"


def hash_split(rel_path: str, test_fraction: float) -> str:
    """A split that depends only on the path: stable across runs, machines and file order."""
    digest = hashlib.sha1(rel_path.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------


def detect_layout(root: Path) -> str:
    if (root / "meta" / "esc50.csv").is_file():
        return "esc50"
    if _find_one(root, "classInd.txt") is not None:
        return "ucf101"
    if _hmdb_split_files(root):
        return "hmdb51"
    if _kinetics_csvs(root):
        return "kinetics"
    problems: list[tuple[str, str]] = []
    if not walk_files(root, VIDEO_EXTS, problems) and walk_files(root, AUDIO_EXTS, problems):
        return "dcase2014"
    return "generic"


def discover(root: str | Path, layout: str = "auto", test_fraction: float = 0.2) -> Discovery:
    """List the inputs of ``root`` in ``layout`` (``auto`` detects it); sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise SticaError(f"input folder not found: {root}")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise SticaError(f"unknown layout '{layout}' (known: auto, {', '.join(LAYOUTS)})")
    found = {
        "generic": lambda: _class_folders(root, "generic", VIDEO_EXTS, test_fraction),
        "dcase2014": lambda: _class_folders(root, "dcase2014", AUDIO_EXTS, test_fraction),
        "ucf101": lambda: _ucf101(root),
        "hmdb51": lambda: _hmdb51(root),
        "kinetics": lambda: _kinetics(root),
        "esc50": lambda: _esc50(root),
    }[layout]()
    found.items.sort(key=lambda it: it.path)
    return found


def _find_one(root: Path, name: str) -> Path | None:
    for folder in (root, *sorted(p for p in _subdirs(root))):
        if (folder / name).is_file():
            return folder / name
    return None


def _subdirs(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SticaError(f"cannot read {path}: {_os_reason(e)}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


def _class_folders(root: Path, layout: str, exts, test_fraction: float) -> Discovery:
    problems: list[tuple[str, str]] = []
    split_dirs = [s for s in ("train", "test") if (root / s).is_dir()]
    files = walk_files(root, exts, problems)
    entries = []  # (rel path, class name, split)
    for rel in files:
        parts = rel.split("/")
        if split_dirs and parts[0] in ("train", "test") and len(parts) >= 3:
            entries.append((rel, parts[1], parts[0]))
        elif not split_dirs and len(parts) >= 2:
            entries.append((rel, parts[0], hash_split(rel, test_fraction)))
        else:
            problems.append((rel, "not inside a class folder"))
    classes = tuple(sorted({c for _, c, _ in entries}))
    index = {c: i for i, c in enumerate(classes)}
    items = [Item(rel, index[c], c, (s,)) for rel, c, s in entries]
    return Discovery(layout, classes, items, 1, audio_only=layout == "dcase2014", problems=problems)


def _ucf101(root: Path) -> Discovery:
    class_ind = _find_one(root, "classInd.txt")
    lists_dir = class_ind.parent
    classes_by_index = {}
    for line in _read_lines(class_ind):
        idx, name = line.split()[:2]
        classes_by_index[int(idx)] = name
    classes = tuple(classes_by_index[i] for i in sorted(classes_by_index))
    video_root = next(
        (d for d in (root / "UCF-101", root / "UCF101", root / "videos") if d.is_dir()), root
    )
    split_ids = sorted(
        int(m.group(1))
        for p in lists_dir.glob("trainlist0*.txt")
        if (m := re.fullmatch(r"trainlist0(\d)\.txt", p.name))
    )
    if not split_ids:
        raise SticaError(f"UCF-101 layout: no trainlist0N.txt beside {class_ind}")
    listed: dict[str, list[str]] = {}
    for k, split_id in enumerate(split_ids):
        for kind in ("train", "test"):
            path = lists_dir / f"{kind}list0{split_id}.txt"
            if not path.is_file():
                continue
            for line in _read_lines(path):
                rel = line.split()[0].replace("\\", "/")
                listed.setdefault(rel, [""] * len(split_ids))[k] = kind
    return _labelled_by_folder(root, video_root, classes, listed, len(split_ids), "ucf101")


def _labelled_by_folder(root, video_root, classes, listed, num_splits, layout) -> Discovery:
    """Items for videos found in ``video_root/CLASS/``, with splits from the lists; listed
    videos that are missing become problems."""
    problems: list[tuple[str, str]] = []
    prefix = video_root.relative_to(root).as_posix() if video_root != root else ""
    on_disk = walk_files(video_root, VIDEO_EXTS, problems)
    problems = [(f"{prefix}/{p}" if prefix else p, r) for p, r in problems]
    index = {c: i for i, c in enumerate(classes)}
    items = []
    by_name = {}
    for rel in on_disk:
        parts = rel.split("/")
        by_name[parts[-1]] = rel
        full = f"{prefix}/{rel}" if prefix else rel
        cls = parts[0] if len(parts) >= 2 else ""
        if cls not in index:
            problems.append((full, "not inside a known class folder"))
            continue
        key = rel if rel in listed else parts[-1]
        splits = tuple(listed.get(key, [""] * num_splits))
        items.append(Item(full, index[cls], cls, splits))
    present = set(on_disk) | set(by_name)
    for rel in sorted(listed):
        if rel not in present:
            problems.append((rel, "listed in the split files but not found"))
    return Discovery(layout, classes, items, num_splits, problems=problems)


def _hmdb_split_files(root: Path) -> list[Path]:
    out = []
    for folder in (root, *_subdirs(root)):
        out.extend(sorted(folder.glob("*_test_split[0-9].txt")))
    return out


def _hmdb51(root: Path) -> Discovery:
    files = _hmdb_split_files(root)
    if not files:
        raise SticaError(f"HMDB-51 layout: no *_test_splitN.txt files in {root}")
    pattern = re.compile(r"(.+)_test_split(\d)\.txt")
    parsed = [(m.group(1), int(m.group(2)), p) for p in files if (m := pattern.fullmatch(p.name))]
    split_ids = sorted({s for _, s, _ in parsed})
    classes = tuple(sorted({c for c, _, _ in parsed}))
    listed: dict[str, list[str]] = {}
    codes = {"1": "train", "2": "test", "0": ""}
    for cls, split_id, path in parsed:
        k = split_ids.index(split_id)
        for line in _read_lines(path):
            fields = line.split()
            if len(fields) < 2:
                continue
            entry = listed.setdefault(f"{cls}/{fields[0]}", [""] * len(split_ids))
            entry[k] = codes.get(fields[1], "")
    video_root = next((d for d in (root / "videos", root / "hmdb51") if d.is_dir()), root)
    return _labelled_by_folder(root, video_root, classes, listed, len(split_ids), "hmdb51")


def _kinetics_csvs(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.glob("*.csv")):
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                header = [h.strip() for h in f.readline().split(",")]
        except OSError:
            continue
        if all(c in header for c in KINETICS_COLUMNS[:2]):
            out.append(path)
    return out


def _kinetics(root: Path) -> Discovery:
    csvs = _kinetics_csvs(root)
    if not csvs:
        raise SticaError(f"Kinetics layout: no CSV with columns {','.join(KINETICS_COLUMNS)}")
    rows = []
    for path in csvs:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            for row in csv.DictReader(f):
                rows.append((path.name, row))
    problems: list[tuple[str, str]] = []
    by_stem: dict[str, str] = {}
    for rel in walk_files(root, VIDEO_EXTS, problems):
        by_stem.setdefault(Path(rel).stem, rel)
    classes = tuple(sorted({row["label"].strip() for _, row in rows if row.get("label")}))
    index = {c: i for i, c in enumerate(classes)}
    items, used = [], set()
    for csv_name, row in rows:
        yid = (row.get("youtube_id") or "").strip()
        stems = [yid]
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            stems.insert(0, f"{yid}_{start:06d}_{end:06d}")
        except (KeyError, TypeError, ValueError):
            pass
        rel = next((by_stem[s] for s in stems if s in by_stem), None)
        if rel is None:
            problems.append((f"{stems[0]} ({csv_name})", "listed in the CSV but not found"))
            continue
        if rel in used:
            continue
        used.add(rel)
        split = (row.get("split") or "").strip().lower()
        split = {"validate": "test", "val": "test", "valid": "test"}.get(split, split)
        label_name = (row.get("label") or "").strip()
        items.append(Item(rel, index.get(label_name, -1), label_name, (split,)))
    return Discovery("kinetics", classes, items, 1, problems=problems)


def _esc50(root: Path) -> Discovery:
    meta = root / "meta" / "esc50.csv"
    with meta.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    names = {}
    for row in rows:
        names[int(row["target"])] = row["category"]
    classes = tuple(names.get(i, f"class{i}") for i in range(max(names, default=-1) + 1))
    folds = sorted({int(row["fold"]) for row in rows})
    items, problems = [], []
    for row in rows:
        rel = f"audio/{row['filename']}"
        if not (root / rel).is_file():
            problems.append((rel, "listed in meta/esc50.csv but not found"))
            continue
        fold = int(row["fold"])
        splits = tuple("test" if fold == k else "train" for k in folds)
        items.append(Item(rel, int(row["target"]), row["category"], splits))
    return Discovery("esc50", classes, items, len(folds), audio_only=True, problems=problems)
