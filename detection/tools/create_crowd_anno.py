"""CrowdHuman ``.odgt`` annotations -> the COCO-style json the published CrowdHuman config
reads, as the published tool lays it out:

    python detection/tools/create_crowd_anno.py --dataset CrowdHuman --dataset-split train
    # reads  data/CrowdHuman/annotations/annotation_train.odgt and data/CrowdHuman/Images/<ID>.jpg
    # writes data/CrowdHuman/annotations/annotation_train.json

One category (``person``, id 1); one annotation per full-body box (``fbox``, boxes with no
area dropped); ``mask`` regions and boxes flagged ``extra.ignore`` become ``iscrowd=1``
(ignored by COCO evaluation and by mmdet's training samplers). Image ids count from 0 in
file order, annotation ids from 1; width and height come from the image files."""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import tempfile

from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CrowdHuman odgt -> COCO-style json annotations")
    parser.add_argument("--dataset", default="CrowdHuman", help="dataset folder name under --data-root")
    parser.add_argument("--dataset-split", required=True, help="split, e.g. train or val")
    parser.add_argument("--data-root", default="data", help="parent of the dataset folder (default data)")
    return parser.parse_args(argv)


def read_odgt(path: str) -> list[dict]:
    """One JSON record per non-empty line; a malformed line is an error naming it."""
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not a JSON record ({error})") from None
    return records


def to_coco(records: list[dict], image_dir: str) -> dict:
    """The COCO-style dict (``images``, ``annotations``, ``categories``) of the records."""
    images, annotations = [], []
    for image_id, record in enumerate(records):
        path = osp.join(image_dir, f"{record['ID']}.jpg")
        if not osp.isfile(path):
            raise FileNotFoundError(f"image {path!r} of record {record['ID']!r} does not exist")
        with Image.open(path) as image:
            width, height = image.size
        images.append(dict(file_name=f"{record['ID']}.jpg", height=height, width=width, id=image_id))
        for box in record.get("gtboxes", []):
            x, y, w, h = box["fbox"]
            if w <= 0 or h <= 0:
                continue
            ignored = box.get("tag") != "person" or box.get("extra", {}).get("ignore", 0) != 0
            annotations.append(dict(area=w * h, iscrowd=int(ignored), image_id=image_id, bbox=[x, y, w, h],
                                    category_id=1, id=len(annotations) + 1))
    return dict(images=images, annotations=annotations,
                categories=[dict(supercategory="none", id=1, name="person")])


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    root = osp.join(args.data_root, args.dataset)
    source = osp.join(root, "annotations", f"annotation_{args.dataset_split}.odgt")
    target = osp.join(root, "annotations", f"annotation_{args.dataset_split}.json")
    if not osp.isfile(source):
        raise SystemExit(f"error: annotation file {source!r} does not exist")
    try:
        coco = to_coco(read_odgt(source), osp.join(root, "Images"))
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise SystemExit(f"error: {error}") from None
    handle, temporary = tempfile.mkstemp(suffix=".json", dir=osp.dirname(target))
    with os.fdopen(handle, "w") as f:
        json.dump(coco, f)
    os.replace(temporary, target)  # atomic: no half-written json
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} boxes -> {target}")
    return target


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
