"""Convert an InternImage detector (mmdet 3.x config + checkpoint) with mmdeploy 1.3 and check
the result; the command line of mmdeploy's ``tools/deploy.py``:

    python detection/deploy.py \
        detection/deploy/configs/mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py \
        detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py ckpt.pth demo.jpg \
        --work-dir work_dirs/mask_rcnn_t_ort [--test-img other.jpg] [--device cpu] [--dump-info]

ONNX Runtime configs: the exported ``end2end.onnx`` is run on IMG (and ``--test-img``) and
compared with PyTorch. TensorRT configs: the engine is built where TensorRT is installed;
elsewhere the ONNX file is written and the commands to finish on a TensorRT machine are
printed (exit status 2). See dense_common/deploy.py for the details.

Also callable in-process: ``main([...])`` returns the exit status."""

from __future__ import annotations

import os
import sys

# `mmdet_custom` (imported by the configs' custom_imports) lives beside this script, and the
# repository root holds dense_common/ops_dcnv3.
_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(_HERE), _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from collections.abc import Sequence  # noqa: E402

from dense_common import deploy  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return deploy.main(argv, plugin_package="mmdet_custom", registry_scope="mmdet",
                       description="Export an InternImage detector to ONNX / TensorRT with mmdeploy.",
                       script=os.path.relpath(__file__))


if __name__ == "__main__":
    sys.exit(main())
