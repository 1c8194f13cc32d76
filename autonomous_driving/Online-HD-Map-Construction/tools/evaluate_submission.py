"""Evaluate a submission file (published command line):

    python tools/evaluate_submission.py <submission_vector.json> <val_annotations.json> [--out metrics.json]

Prints the published table (category, num_preds, num_gts, AP@0.5/1.0/1.5, AP; fractions
rounded to 4), ``mAP = x.xxxx`` and the published ``{class: AP}`` dict. ``--out`` also
saves every number (per threshold, counts, mAP) as json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from autonomous_driving.online_hdmap.vector_eval import VectorEvaluate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a submission file")
    parser.add_argument("submission", help="submission file in json (or pickle) format to be evaluated")
    parser.add_argument("gt", help="gt annotation file")
    parser.add_argument("--out", help="also write all metrics (fractions) to this json file")
    parser.add_argument(
        "--n-workers", type=int, default=0, help="worker processes for the matching (published: 0)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    for name in ("submission", "gt"):
        if not os.path.isfile(getattr(args, name)):
            raise SystemExit(f"{name}: no such file {getattr(args, name)!r}")
    evaluator = VectorEvaluate(args.gt, n_workers=args.n_workers)
    results = evaluator.evaluate(args.submission)
    print(results)
    full = evaluator.last_result
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(full, indent=2))
        os.replace(tmp, out)
    return full


if __name__ == "__main__":
    main()
