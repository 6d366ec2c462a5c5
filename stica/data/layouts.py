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

Every regular file under the root is accounted for: the layout's own annotation files
(``sidecars``: split lists, CSVs, the demo's ``classes.json``) are read and not listed; files the layout
places become ``items`` (decoded, then stored or rejected by content); files it cannot place
(a video beside the class folders, a file no CSV row names) are ``unplaced`` with the layout's
reason, and preprocessing probes them: a real video is rejected with that reason, anything else
(a README, an image) is skipped with what it is. Extensions never decide: a ``.rm`` or ``.vob``
video is a video, a text file named ``.mp4`` is not (the extension lists below only guess which
of ``generic`` / ``dcase2014`` an ``auto`` folder is). Hidden files and folders are ``skipped``
by name; paths that cannot be listed (unreadable folders, symlink loops) and files named by a
split list but absent are ``problems`` (path, reason), rejected.
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
# What ``stica synth`` writes beside the demo set's class folders (stica.data.synth's
# CLASSES_FILE and LOG_FILE; not imported: that module pulls in the whole generator).
SYNTH_SIDECARS = ("classes.json", "synth.log")
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
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): rejected
    unplaced: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): probed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): hidden etc.
    sidecars: list[str] = field(default_factory=list)  # annotation files the layout read


class _Walk:
    """The regular files below a root (sorted relative POSIX paths) and what was not listed."""

    def __init__(self, root: Path, exclude: frozenset[Path] = frozenset()):
        self.problems: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []
        self.files = walk_files(root, self.problems, skipped=self.skipped, exclude=exclude)


# ------------------------------------------------------------------------------------------------
# Walking the file tree safely
# ------------------------------------------------------------------------------------------------


def walk_files(
    root: Path,
    problems: list[tuple[str, str]],
    skipped: list[tuple[str, str]] | None = None,
    exclude: frozenset[Path] = frozenset(),
    exts: frozenset[str] | None = None,
) -> list[str]:
    """Relative POSIX paths of the regular files below ``root``, sorted.

    Follows directory symlinks once (a folder reached again through a link is reported as a
    symlink loop), and reports unreadable folders and dangling/looping file links in ``problems``.
    Hidden files and folders, and anything that is not a regular file (a FIFO would block a
    reader forever), go to ``skipped`` with a reason. Folders in ``exclude`` (resolved paths: the
    store being written inside its own input) are left out silently. ``exts`` keeps only those
    extensions (used to guess a layout, never to choose inputs).
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    skipped = [] if skipped is None else skipped

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
            if exts is not None and not is_dir and Path(entry.name).suffix.lower() not in exts:
                continue
            hidden = entry.name.startswith(".")
            if is_dir:
                if exclude and Path(entry.path).resolve() in exclude:
                    continue
                if hidden:
                    skipped.append((child_rel, "hidden folder (not searched)"))
                else:
                    visit(Path(entry.path), child_rel)
            elif is_file:
                if hidden:
                    skipped.append((child_rel, "hidden file"))
                else:
                    found.append(child_rel)
            elif entry.is_symlink():
                problems.append((child_rel, _link_reason(Path(entry.path))))
            else:
                skipped.append((child_rel, "not a regular file"))

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
    videos = walk_files(root, problems, exts=VIDEO_EXTS)
    if not videos and walk_files(root, problems, exts=AUDIO_EXTS):
        return "dcase2014"
    return "generic"


def discover(
    root: str | Path,
    layout: str = "auto",
    test_fraction: float = 0.2,
    exclude: tuple[str | Path, ...] = (),
) -> Discovery:
    """List the inputs of ``root`` in ``layout`` (``auto`` detects it); sorted by path.

    ``exclude``: folders below ``root`` not to look into (the store being written there).
    """
    root = Path(root)
    if not root.is_dir():
        raise SticaError(f"input folder not found: {root}")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise SticaError(f"unknown layout '{layout}' (known: auto, {', '.join(LAYOUTS)})")
    walk = _Walk(root, frozenset(Path(p).resolve() for p in exclude))
    found = {
        "generic": lambda: _class_folders(root, walk, "generic", test_fraction),
        "dcase2014": lambda: _class_folders(root, walk, "dcase2014", test_fraction),
        "ucf101": lambda: _ucf101(root, walk),
        "hmdb51": lambda: _hmdb51(root, walk),
        "kinetics": lambda: _kinetics(root, walk),
        "esc50": lambda: _esc50(root, walk),
    }[layout]()
    found.problems = walk.problems + found.problems
    found.skipped = walk.skipped
    found.items.sort(key=lambda it: it.path)
    found.unplaced.sort()
    found.sidecars.sort()
    return found


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


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


def _class_folders(root: Path, walk: _Walk, layout: str, test_fraction: float) -> Discovery:
    sidecars = [name for name in SYNTH_SIDECARS if name in walk.files]
    split_dirs = [s for s in ("train", "test") if (root / s).is_dir()]
    entries, unplaced = [], []  # entries: (rel path, class name, split)
    for rel in walk.files:
        if rel in sidecars:
            continue
        parts = rel.split("/")
        if split_dirs and parts[0] in ("train", "test") and len(parts) >= 3:
            entries.append((rel, parts[1], parts[0]))
        elif not split_dirs and len(parts) >= 2:
            entries.append((rel, parts[0], hash_split(rel, test_fraction)))
        else:
            unplaced.append((rel, "not inside a class folder"))
    classes = tuple(sorted({c for _, c, _ in entries}))
    index = {c: i for i, c in enumerate(classes)}
    items = [Item(rel, index[c], c, (s,)) for rel, c, s in entries]
    return Discovery(
        layout,
        classes,
        items,
        1,
        audio_only=layout == "dcase2014",
        unplaced=unplaced,
        sidecars=sidecars,
    )


def _ucf101(root: Path, walk: _Walk) -> Discovery:
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
    sidecars = [_rel(root, class_ind)]
    listed: dict[str, list[str]] = {}
    for k, split_id in enumerate(split_ids):
        for kind in ("train", "test"):
            path = lists_dir / f"{kind}list0{split_id}.txt"
            if not path.is_file():
                continue
            sidecars.append(_rel(root, path))
            for line in _read_lines(path):
                rel = line.split()[0].replace("\\", "/")
                listed.setdefault(rel, [""] * len(split_ids))[k] = kind
    return _labelled_by_folder(
        root, walk, video_root, classes, listed, len(split_ids), "ucf101", sidecars
    )


def _labelled_by_folder(
    root, walk, video_root, classes, listed, num_splits, layout, sidecars
) -> Discovery:
    """Items for videos found in ``video_root/CLASS/``, with splits from the lists; listed
    videos that are missing become problems, other files are unplaced."""
    prefix = video_root.relative_to(root).as_posix() if video_root != root else ""
    index = {c: i for i, c in enumerate(classes)}
    items, unplaced = [], []
    present = set()
    side = set(sidecars)
    for full in walk.files:
        if full in side:
            continue
        if prefix and not full.startswith(prefix + "/"):
            unplaced.append((full, "not inside the video folder"))
            continue
        rel = full[len(prefix) + 1 :] if prefix else full
        parts = rel.split("/")
        cls = parts[0] if len(parts) >= 2 else ""
        if cls not in index:
            unplaced.append((full, "not inside a known class folder"))
            continue
        present.update((rel, parts[-1]))
        key = rel if rel in listed else parts[-1]
        splits = tuple(listed.get(key, [""] * num_splits))
        items.append(Item(full, index[cls], cls, splits))
    problems = [
        (rel, "listed in the split files but not found")
        for rel in sorted(listed)
        if rel not in present
    ]
    return Discovery(
        layout,
        classes,
        items,
        num_splits,
        problems=problems,
        unplaced=unplaced,
        sidecars=list(sidecars),
    )


def _hmdb_split_files(root: Path) -> list[Path]:
    out = []
    for folder in (root, *_subdirs(root)):
        out.extend(sorted(folder.glob("*_test_split[0-9].txt")))
    return out


def _hmdb51(root: Path, walk: _Walk) -> Discovery:
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
    sidecars = [_rel(root, p) for _, _, p in parsed]
    return _labelled_by_folder(
        root, walk, video_root, classes, listed, len(split_ids), "hmdb51", sidecars
    )


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


def _kinetics(root: Path, walk: _Walk) -> Discovery:
    csvs = _kinetics_csvs(root)
    if not csvs:
        raise SticaError(f"Kinetics layout: no CSV with columns {','.join(KINETICS_COLUMNS)}")
    rows = []
    for path in csvs:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            for row in csv.DictReader(f):
                rows.append((path.name, row))
    sidecars = [_rel(root, p) for p in csvs]
    by_stem: dict[str, str] = {}
    # a video's thumbnail or subtitles may share its stem: a video extension goes first
    for rel in sorted(walk.files, key=lambda r: Path(r).suffix.lower() not in VIDEO_EXTS):
        if rel not in sidecars:
            by_stem.setdefault(Path(rel).stem, rel)
    classes = tuple(sorted({row["label"].strip() for _, row in rows if row.get("label")}))
    index = {c: i for i, c in enumerate(classes)}
    items, used, problems = [], set(), []
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
    unplaced = [
        (rel, "not listed in the CSV files")
        for rel in walk.files
        if rel not in used and rel not in sidecars
    ]
    return Discovery(
        "kinetics", classes, items, 1, problems=problems, unplaced=unplaced, sidecars=sidecars
    )


def _esc50(root: Path, walk: _Walk) -> Discovery:
    meta = root / "meta" / "esc50.csv"
    with meta.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    names = {}
    for row in rows:
        names[int(row["target"])] = row["category"]
    classes = tuple(names.get(i, f"class{i}") for i in range(max(names, default=-1) + 1))
    folds = sorted({int(row["fold"]) for row in rows})
    on_disk = set(walk.files)
    items, problems, used = [], [], set()
    for row in rows:
        rel = f"audio/{row['filename']}"
        if rel not in on_disk:
            problems.append((rel, "listed in meta/esc50.csv but not found"))
            continue
        used.add(rel)
        fold = int(row["fold"])
        splits = tuple("test" if fold == k else "train" for k in folds)
        items.append(Item(rel, int(row["target"]), row["category"], splits))
    sidecars = ["meta/esc50.csv"]
    unplaced = [
        (rel, "not listed in meta/esc50.csv")
        for rel in walk.files
        if rel not in used and rel not in sidecars
    ]
    return Discovery(
        "esc50",
        classes,
        items,
        len(folds),
        audio_only=True,
        problems=problems,
        unplaced=unplaced,
        sidecars=sidecars,
    )
