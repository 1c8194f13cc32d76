"""Convert a published Mask2Former checkpoint (mmseg 0.x layout) to mmseg 1.2's names.

    python segmentation/tools/convert_checkpoint.py IN.pth OUT.pth

Not needed to load one (``load_from``, test.py, image_demo.py and deploy.py convert on the
fly); this writes the converted file, atomically."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dense_common.checkpoint_conversion import tool_main  # noqa: E402
from dense_common.published_keys import PUBLISHED_MASK2FORMER  # noqa: E402

if __name__ == "__main__":
    sys.exit(tool_main(sys.argv[1:], expected_layout=PUBLISHED_MASK2FORMER,
                       prog="segmentation/tools/convert_checkpoint.py"))
