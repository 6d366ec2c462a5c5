"""Small, fast PNG plots for people who would rather look than read.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot global state, no
display needed) and written atomically (temp file + rename).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from stica.errors import SticaError

DPI = 100
CELL_W_IN = 1.6  # gallery cell width, inches (160 px at DPI 100)
CELL_H_IN = 1.6  # gallery cell height including its title
HIT_COLOUR = "#1a9850"
MISS_COLOUR = "#d73027"
QUERY_COLOUR = "#4575b4"
FRAME_WIDTH = 4  # points
CM_MIN_IN, CM_MAX_IN, CM_IN_PER_CLASS = 4.0, 16.0, 0.45
CM_ANNOTATE_MAX = 20  # write counts in the cells up to this many classes


def gallery_size_px(num_queries: int, num_neighbours: int) -> tuple[int, int]:
    """(width, height) in pixels of ``retrieval_gallery``'s PNG."""
    return (
        round((1 + num_neighbours) * CELL_W_IN * DPI),
        round(num_queries * CELL_H_IN * DPI),
    )


def retrieval_gallery(
    path: str | Path,
    query_frames: Sequence[np.ndarray],
    neighbour_frames: Sequence[Sequence[np.ndarray]],
    hits: np.ndarray,
    query_labels: Sequence[int],
    neighbour_labels: np.ndarray,
    class_names: Sequence[str] = (),
) -> Path:
    """One row per query: its middle frame, then its neighbours' middle frames, best first.

    Neighbours are framed green (same class as the query: a hit) or red (a miss); every image is
    titled with its class name (the query's also with "query").

    Shape:
        query_frames: Q frames (H, W, 3) uint8; neighbour_frames: Q x K frames (H, W, 3) uint8
        (sizes may differ between videos); hits, neighbour_labels: (Q, K); query_labels: (Q,).
    """
    hits = np.asarray(hits, dtype=bool)
    neighbour_labels = np.asarray(neighbour_labels)
    num_q = len(query_frames)
    if num_q == 0:
        raise SticaError("gallery: no queries to show")
    if hits.ndim != 2 or hits.shape[0] != num_q or neighbour_labels.shape != hits.shape:
        raise SticaError(
            f"gallery: hits {hits.shape} and neighbour labels {neighbour_labels.shape} "
            f"must both be ({num_q}, K)"
        )
    num_k = hits.shape[1]
    if len(neighbour_frames) != num_q or any(len(row) != num_k for row in neighbour_frames):
        raise SticaError(f"gallery: neighbour frames must be {num_q} rows of {num_k}")

    def name(label: int) -> str:
        label = int(label)
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    fig = Figure(figsize=((1 + num_k) * CELL_W_IN, num_q * CELL_H_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(num_q, 1 + num_k, squeeze=False)
    for i in range(num_q):
        _image_cell(axes[i, 0], query_frames[i], f"query: {name(query_labels[i])}", QUERY_COLOUR)
        for j in range(num_k):
            colour = HIT_COLOUR if hits[i, j] else MISS_COLOUR
            _image_cell(
                axes[i, j + 1],
                neighbour_frames[i][j],
                f"{j + 1}. {name(neighbour_labels[i, j])}",
                colour,
            )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.08, hspace=0.3)
    return _save(fig, path)


def confusion_matrix_plot(
    path: str | Path, cm: np.ndarray, class_names: Sequence[str] = ()
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts annotated.

    Shape:
        cm: (C, C) counts.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise SticaError(f"confusion matrix must be C x C, got shape {cm.shape}")
    num_c = cm.shape[0]
    names = [class_names[c] if c < len(class_names) else str(c) for c in range(num_c)]
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    side = float(np.clip(CM_IN_PER_CLASS * num_c + 2.0, CM_MIN_IN, CM_MAX_IN))
    fig = Figure(figsize=(side, side), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(num_c)
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.1%})", fontsize=9)
    if num_c <= CM_ANNOTATE_MAX:
        for (r, c), v in np.ndenumerate(cm):
            if v:
                colour = "white" if frac[r, c] > 0.5 else "black"
                ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return _save(fig, path)


def _image_cell(ax, frame: np.ndarray, title: str, colour: str) -> None:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise SticaError(f"gallery: frames must be (H, W, 3), got shape {frame.shape}")
    ax.imshow(frame, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    h, w = frame.shape[:2]
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=colour, linewidth=FRAME_WIDTH))
    ax.set_title(title, fontsize=7, color=colour, pad=2)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
