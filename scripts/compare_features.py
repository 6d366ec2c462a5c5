"""How far apart two features files of the same store are (e.g. frames decoded by PIL in the
loader workers vs by nvJPEG on the GPU): per-video cosine and largest absolute difference, video,
audio and per-clip features. Prints JSON and optionally writes it.

    python scripts/compare_features.py A.h5 B.h5 [--json-out OUT.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stica.eval.features_io import read_features


def _distance(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    present = norms > 0  # zero rows: videos without audio
    cosine = np.sum(a * b, axis=-1)[present] / norms[present]
    return {
        "min_cosine": float(cosine.min()) if cosine.size else None,
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    a, b = read_features(args.a), read_features(args.b)
    if list(a.video_ids) != list(b.video_ids):
        raise SystemExit(f"{args.a} and {args.b} hold different videos")
    result = {
        "a": args.a,
        "b": args.b,
        "videos": len(a.video_ids),
        "video": _distance(a.features, b.features),
        "audio": _distance(a.audio_features, b.audio_features),
    }
    if a.clip_features is not None and b.clip_features is not None:
        result["clips"] = _distance(a.clip_features, b.clip_features)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
