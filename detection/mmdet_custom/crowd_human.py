"""CrowdHuman from its released ``.odgt`` files (one JSON record per line:
``{"ID": ..., "gtboxes": [{"tag": "person"|"mask", "fbox": [x, y, w, h], "vbox": ...,
"hbox": ..., "extra": {"ignore": 0|1, ...}}, ...]}``) as an mmdet 3 dataset.

One class, ``person``. Boxes are the full-body ``fbox`` by default (``box_type`` picks
``vbox`` or ``hbox``); ``mask`` regions (crowds, reflections) and boxes flagged
``extra.ignore`` become ignore regions (``ignore_flag=1``), which the detectors' samplers
and mmdet's ``CrowdHumanMetric`` leave out. Unlike mmdet's own ``CrowdHumanDataset``
it writes no cache next to the data: image sizes come from the record when present,
else from the image header."""

from __future__ import annotations

import io
import json
import os.path as osp

from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get, get_text
from PIL import Image

BOX_TYPES = ("fbox", "vbox", "hbox")


@DATASETS.register_module()
class CrowdHumanOdgtDataset(BaseDetDataset):
    METAINFO = {"classes": ("person",), "palette": [(220, 20, 60)]}

    def __init__(self, *args, box_type: str = "fbox", img_suffix: str = ".jpg", **kwargs):
        if box_type not in BOX_TYPES:
            raise ValueError(f"box_type must be one of {BOX_TYPES}, got {box_type!r}")
        self.box_type = box_type
        self.img_suffix = img_suffix
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        data_list = []
        lines = get_text(self.ann_file, backend_args=self.backend_args).splitlines()
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.ann_file}:{line_no}: not a JSON record ({error})") from None
            data_list.append(self.parse_data_info(record))
        return data_list

    def _image_size(self, record: dict, img_path: str) -> tuple[int, int]:
        if "height" in record and "width" in record:
            return int(record["height"]), int(record["width"])
        with Image.open(io.BytesIO(get(img_path, backend_args=self.backend_args))) as image:
            width, height = image.size  # PIL parses the header only, no decoding
        return height, width

    def parse_data_info(self, record: dict) -> dict:
        if "ID" not in record or "gtboxes" not in record:
            raise ValueError(f"{self.ann_file}: every odgt record needs 'ID' and 'gtboxes', got keys "
                             f"{sorted(record)}")
        img_path = osp.join(self.data_prefix.get("img", ""), f"{record['ID']}{self.img_suffix}")
        height, width = self._image_size(record, img_path)
        instances = []
        for box in record["gtboxes"]:
            x, y, w, h = box[self.box_type]
            ignored = box.get("tag") != "person" or bool(box.get("extra", {}).get("ignore", 0))
            instances.append(dict(bbox=[x, y, x + w, y + h], bbox_label=0, ignore_flag=int(ignored)))
        return dict(img_path=img_path, img_id=record["ID"], height=height, width=width, instances=instances)

    def filter_data(self) -> list[dict]:
        """Drops images without any non-ignored person when ``filter_cfg.filter_empty_gt``
        (test mode keeps everything), and images below ``filter_cfg.min_size``."""
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty = self.filter_cfg.get("filter_empty_gt", False)
        min_size = self.filter_cfg.get("min_size", 0)
        return [info for info in self.data_list
                if min(info["height"], info["width"]) >= min_size
                and not (filter_empty and all(inst["ignore_flag"] for inst in info["instances"]))]

