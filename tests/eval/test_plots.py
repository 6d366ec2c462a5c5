import struct

import numpy as np
import pytest
from matplotlib.image import imread

from stica.errors import SticaError
from stica.eval.plots import confusion_matrix_plot, gallery_size_px, retrieval_gallery

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_gallery_png_size_and_hit_miss_colours(tmp_path):
    q, k = 3, 5
    queries = [np.full((48, 64, 3), 128, np.uint8) for _ in range(q)]
    # Neighbours of different sizes (videos of different aspect ratios).
    neighbours = [[np.full((40 + 4 * j, 50, 3), 90, np.uint8) for j in range(k)] for _ in range(q)]
    hits = np.zeros((q, k), bool)
    hits[:, 0] = True
    labels = np.where(hits, 1, 2)
    out = retrieval_gallery(
        tmp_path / "g" / "gallery.png",
        queries,
        neighbours,
        hits,
        [1, 1, 1],
        labels,
        ["a", "jump", "spin"],
    )
    assert _png_size(out) == gallery_size_px(q, k) == (6 * 160, 3 * 160)
    img = imread(out)[..., :3]
    green = ((img[..., 1] > 0.5) & (img[..., 0] < 0.3) & (img[..., 2] < 0.4)).sum()
    red = ((img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)).sum()
    assert green > 0 and red > 3 * green  # 3 hit frames, 12 miss frames
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["gallery.png"]


def test_gallery_refuses_mismatched_shapes(tmp_path):
    frames = [np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(SticaError, match="must both be"):
        retrieval_gallery(
            tmp_path / "x.png", frames, [frames], np.ones((1, 2)), [0], np.ones((1, 1))
        )
    assert not (tmp_path / "x.png").exists()


def test_confusion_matrix_png(tmp_path):
    cm = np.array([[5, 1, 0], [0, 3, 3], [0, 0, 0]])
    out = confusion_matrix_plot(tmp_path / "cm.png", cm, ["a", "b", "c"])
    assert _png_size(out) == (400, 400)  # small C: the minimum 4-inch square at 100 dpi
    big = confusion_matrix_plot(tmp_path / "big.png", np.eye(40, dtype=int))
    assert _png_size(big) == (1600, 1600)
    with pytest.raises(SticaError, match="C x C"):
        confusion_matrix_plot(tmp_path / "bad.png", np.zeros((2, 3)))
