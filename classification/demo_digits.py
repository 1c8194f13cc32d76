"""The main job: train InternImage on real handwritten digits, offline, in minutes.

    python -m classification.demo_digits [--output DIR] [--budget-s 600]   # DIR: ~/internimage-output/digits

1. exports scikit-learn's digits (1797 real 8x8 scans) to a class-folder dataset
   (fixed, stratified 80/20 train/val split; 32x32 RGB PNGs);
2. trains InternImage-nano (classification/configs/demo/) with the real trainer;
3. checks val top-1 >= 90% within the time budget and points at the curves plot;
4. classifies a real photo shipped with scikit-image and prints the top-5."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python classification/demo_digits.py` from anywhere
    sys.path.insert(0, str(ROOT))

from classification.output_root import default_output  # noqa: E402

CONFIG = ROOT / "classification" / "configs" / "demo" / "internimage_nano_digits.yaml"
IMG_SIZE = 32


def export_digits(root: Path, seed: int = 0) -> tuple[int, int]:
    """Writes train/<digit>/*.png and val/<digit>/*.png under ``root`` once (a marker
    file makes it idempotent); returns the (train, val) counts."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)
    train_idx, val_idx = train_test_split(np.arange(len(images)), test_size=0.2, random_state=seed,
                                          stratify=digits.target)
    marker = root / ".complete"
    if not marker.exists():
        for split, indices in (("train", train_idx), ("val", val_idx)):
            for i in indices:
                folder = root / split / str(digits.target[i])
                folder.mkdir(parents=True, exist_ok=True)
                image = Image.fromarray(images[i]).resize((IMG_SIZE, IMG_SIZE), Image.BICUBIC)
                image.convert("RGB").save(folder / f"{i:04d}.png")
        marker.write_text(f"{len(train_idx)} {len(val_idx)}\n")
    return len(train_idx), len(val_idx)


def classify_photo(checkpoint: Path, config_path: Path, top: int = 5) -> list[tuple[str, float]]:
    """Top-k digit classes the trained model gives a real photo (skimage's camera man),
    preprocessed like the validation images."""
    from skimage import data as skdata

    from classification.config import load_config_file
    from classification.data import build_transform
    from classification.models import build_model, load_pretrained

    config = load_config_file(str(config_path))
    model = build_model(config).eval()
    load_pretrained(model, str(checkpoint))
    photo = Image.fromarray(skdata.camera()).convert("RGB")
    batch = build_transform(False, config)(photo).unsqueeze(0)
    with torch.inference_mode():
        probabilities = model(batch).softmax(-1)[0]
    values, indices = probabilities.topk(top)
    return [(str(i), v) for i, v in zip(indices.tolist(), values.tolist())]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("digits"),
                        help="dataset and training outputs go here (default: $INTERNIMAGE_OUTPUT/digits, "
                             "outside the checkout)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="time allowed for training")
    parser.add_argument("--min-accuracy", type=float, default=90.0, help="required val top-1 (%%)")
    parser.add_argument("--opts", nargs="+", default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    from classification import main as trainer

    output = Path(args.output)
    data_root = output / "data"
    n_train, n_val = export_digits(data_root)
    print(f"[digits] dataset: {n_train} train / {n_val} val images (32x32) in {data_root}", flush=True)

    start = time.perf_counter()
    result = trainer.main(["--cfg", str(CONFIG), "--data-path", str(data_root), "--output", str(output),
                           "--tag", "nano", *(["--opts", *args.opts] if args.opts else [])])
    seconds = time.perf_counter() - start
    run_dir = Path(result["output"])
    accuracy = float(result["max_accuracy"])
    print(f"[digits] val top-1 {accuracy:.2f}% (best of {result['epochs_run']} epochs) in {seconds:.0f} s; "
          f"curves: {run_dir / 'curves.png'}", flush=True)

    best = run_dir / "ckpt_epoch_best.pth"
    ranking = classify_photo(best, run_dir / "config.yaml" if (run_dir / "config.yaml").exists() else CONFIG)
    print("[digits] skimage.data.camera() classified by the digits model, top-5:")
    for label, probability in ranking:
        print(f"    digit {label}: {probability:.3f}")

    failures = []
    if accuracy < args.min_accuracy:
        failures.append(f"val top-1 {accuracy:.2f}% < {args.min_accuracy}%")
    if seconds > args.budget_s:
        failures.append(f"training took {seconds:.0f} s > {args.budget_s:.0f} s")
    if failures:
        raise SystemExit("[digits] FAILED: " + "; ".join(failures))
    print(f"[digits] OK: >= {args.min_accuracy}% within {args.budget_s:.0f} s")
    return {"accuracy": accuracy, "seconds": seconds, "top5": ranking, "output": str(run_dir)}


if __name__ == "__main__":
    main()
