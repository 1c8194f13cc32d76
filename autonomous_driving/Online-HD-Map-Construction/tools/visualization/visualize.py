"""Pictures of one log's map lines (published command line):

    python tools/visualization/visualize.py LOG_ID ANN_FILE [--result submission_vector.json]
        [--thr 0.4] [--out-dir DIR]

One image per frame, ``<out-dir>/<log_id>/<timestamp>.jpg``: the ground-truth lines of the
annotation file in a bird's-eye view of the 60 m x 30 m map box (ego at the centre, driving
up, left on the left), and, with ``--result``, the submission's lines scoring at least
``--thr`` beside them, in the class colours (ped_crossing blue, divider green, boundary red).
Without ``--out-dir`` the pictures go to ``$INTERNIMAGE_OUTPUT/demo`` (never into the checkout).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from autonomous_driving.online_hdmap.annotations import frame_map_lines, frame_token, load_annotations
from autonomous_driving.online_hdmap.chamfer_ap import ID2CAT
from autonomous_driving.online_hdmap.submission import read_submission
from classification.output_root import default_output

ROI = (60.0, 30.0)  # metres: x forward, y left
PX_PER_M = 10
COLOURS = {"ped_crossing": (255, 128, 0), "divider": (0, 180, 0), "boundary": (0, 0, 230)}  # BGR


def to_pixels(line: np.ndarray) -> np.ndarray:
    """Ego metres (x forward, y left) to panel pixels (column, row): forward is up."""
    line = np.asarray(line, dtype=np.float64)[:, :2]
    col = (ROI[1] / 2 - line[:, 1]) * PX_PER_M
    row = (ROI[0] / 2 - line[:, 0]) * PX_PER_M
    return np.round(np.stack([col, row], 1)).astype(np.int32)


def draw_panel(lines: Sequence[tuple[str, np.ndarray]], title: str) -> np.ndarray:
    """A white bird's-eye panel with the ego box, the lines (class, (N, 2) metres) and a title."""
    h, w = int(ROI[0] * PX_PER_M), int(ROI[1] * PX_PER_M)
    img = np.full((h + 30, w, 3), 255, dtype=np.uint8)
    bev = img[30:]
    ego = to_pixels(np.array([[2.5, 1.0], [-2.5, -1.0]]))
    cv2.rectangle(bev, tuple(ego[0]), tuple(ego[1]), (90, 90, 90), -1)
    for cat, line in lines:
        pts = to_pixels(line)
        cv2.polylines(bev, [pts], False, COLOURS[cat], 2, cv2.LINE_AA)
        for p in pts[[0, -1]]:
            cv2.circle(bev, tuple(int(v) for v in p), 3, COLOURS[cat], -1)
    cv2.putText(img, title, (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def predicted_lines(pred: Mapping[str, Any] | None, thr: float) -> list[tuple[str, np.ndarray]]:
    if pred is None:
        return []
    return [
        (ID2CAT[int(label)], np.asarray(vec, dtype=np.float64))
        for vec, score, label in zip(pred["vectors"], pred["scores"], pred["labels"])
        if float(score) >= thr
    ]


def visualize_log(
    log_id: str, ann_file: str, result: str | None = None, thr: float = 0.4, out_dir: str | None = None
) -> list[str]:
    """Write the pictures of every frame of ``log_id``; returns their paths."""
    ann = load_annotations(ann_file)
    if log_id not in ann:
        some = ", ".join(list(ann)[:5])
        raise SystemExit(f"error: log {log_id!r} is not in {ann_file} (it holds {len(ann)} logs: {some} ...)")
    results = read_submission(result)["results"] if result else None
    folder = os.path.join(out_dir or default_output("demo"), log_id)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for frame in ann[log_id]:
        token = frame_token(frame)
        panels = []
        if "annotation" in frame:
            gt = [(cat, line) for cat, lines in frame_map_lines(frame).items() for line in lines]
            panels.append(draw_panel(gt, f"GT {token}"))
        if results is not None:
            pred = results.get(token)
            title = f"pred (score >= {thr})" if pred is not None else "pred: no result for this frame"
            panels.append(draw_panel(predicted_lines(pred, thr), title))
        if not panels:
            raise SystemExit(f"error: frame {token} has no annotation and no --result: nothing to draw")
        gap = np.full((panels[0].shape[0], 10, 3), 255, dtype=np.uint8)
        picture = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        path = os.path.join(folder, f"{token}.jpg")
        if not cv2.imwrite(path, picture):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw the GT (and predicted) map lines of one log")
    parser.add_argument("log_id", help="segment id (a key of the annotation file)")
    parser.add_argument("ann_file", help="{train,val,test}_annotations.json")
    parser.add_argument("--result", help="submission_vector.json to draw beside the GT")
    parser.add_argument("--thr", type=float, default=0.4, help="draw predictions scoring at least this")
    parser.add_argument("--out-dir", help="where the pictures go (default $INTERNIMAGE_OUTPUT/demo)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    for name in ("ann_file", "result"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise SystemExit(f"error: {name}: no such file {path!r}")
    paths = visualize_log(args.log_id, args.ann_file, args.result, args.thr, args.out_dir)
    print(f"wrote {len(paths)} pictures to {os.path.dirname(paths[0]) if paths else args.out_dir}")
    return paths


if __name__ == "__main__":
    main()
