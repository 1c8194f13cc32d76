"""DCNv3 as ONNX's standard ``DeformConv`` (opset >= 19).

DCNv3's core is a depthwise deformable convolution whose kernel weights are all one:
output channel c sums, over the taps, mask * bilinear sample of input channel c at
(regular position + offset), offsets and masks shared by the ``group_channels`` channels
of a group. ``DeformConv`` with ``group = channels`` (depthwise), ``offset_group = group``
and unit weights computes exactly that, with the same sampling rule (zero outside the
image, pixel centres at integers; dcnv3.md). What differs is layout only:

- tensors: DCNv3 is channels-last (N, H, W, C), DeformConv channels-first;
- offset channels: DCNv3 orders a group's taps width-index outer with (dx, dy) pairs,
  DeformConv row-major over (kernel_h, kernel_w) with (dy, dx) pairs: one constant
  ``Gather`` permutes them (and the mask channels) before the transpose;
- ``offset_scale`` scales the regular taps too in DCNv3; folded into the offsets as
  ``offset * s + tap * (s - 1)``;
- ``remove_center`` drops the centre tap; DeformConv always has it, so it reads a zero
  offset and a zero mask there.

Needs opset >= 19 (``export.DEFORM_CONV_MIN_OPSET``). The same node sequence is emitted
by the TorchScript exporter (the portable form of :mod:`ops_dcnv3.export`) and by
:mod:`ops_dcnv3.onnxruntime` when it lowers an ``mmdeploy::TRTDCNv3`` node for
onnxruntime, through the small builders below. No shape is needed: every reshape is a
transpose or a gather along the channel axis, so batch and spatial sizes stay dynamic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class DCNv3Attrs:
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    group: int
    group_channels: int
    offset_scale: float
    remove_center: bool

    @property
    def channels(self) -> int:
        return self.group * self.group_channels

    def taps(self) -> list[tuple[int, int]]:
        """(i, j) of each DCNv3 tap in its channel order: width index i outer."""
        ci, cj = self.kernel_w // 2, self.kernel_h // 2
        return [(i, j) for i in range(self.kernel_w) for j in range(self.kernel_h)
                if not (self.remove_center and i == ci and j == cj)]


class GraphBuilder(Protocol):
    def op(self, op_type: str, *inputs: Any, **attrs: Any) -> Any: ...

    def const(self, array: np.ndarray) -> Any: ...


def channel_orders(attrs: DCNv3Attrs) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices turning DCNv3's offset and mask channels into DeformConv's.

    Index ``G * P * 2`` (offsets) and ``G * P`` (masks), one past the DCNv3 channels,
    is the zero column appended for a removed centre tap."""
    taps = {tap: t for t, tap in enumerate(attrs.taps())}
    points = len(taps)
    offset_index, mask_index = [], []
    for g in range(attrs.group):
        for j in range(attrs.kernel_h):  # DeformConv: row-major (kernel row j, column i)
            for i in range(attrs.kernel_w):
                t = taps.get((i, j))
                if t is None:  # the removed centre
                    offset_index += [attrs.group * points * 2] * 2
                    mask_index.append(attrs.group * points)
                    continue
                base = (g * points + t) * 2
                offset_index += [base + 1, base]  # DeformConv wants (dy, dx)
                mask_index.append(g * points + t)
    return np.array(offset_index, dtype=np.int64), np.array(mask_index, dtype=np.int64)


def tap_displacements(attrs: DCNv3Attrs) -> np.ndarray:
    """DCNv3's regular tap displacement (dx, dy) per offset channel, shape (G * P * 2,)."""
    half_w = attrs.dilation_w * (attrs.kernel_w - 1) // 2
    half_h = attrs.dilation_h * (attrs.kernel_h - 1) // 2
    one_group = [v for i, j in attrs.taps()
                 for v in (i * attrs.dilation_w - half_w, j * attrs.dilation_h - half_h)]
    return np.array(one_group * attrs.group, dtype=np.float64)


def emit_deform_conv(b: GraphBuilder, input: Any, offset: Any, mask: Any, attrs: DCNv3Attrs,
                     dtype: np.dtype | None = None) -> Any:
    """Emits DCNv3(input, offset, mask) -> (N, Ho, Wo, C), all channels-last, through ``b``;
    ``dtype`` (default float32) is that of the tensors, for the constants."""
    dtype = np.dtype(np.float32) if dtype is None else np.dtype(dtype)
    if attrs.offset_scale != 1.0:
        scale = attrs.offset_scale
        offset = b.op("Mul", offset, b.const(np.array(scale, dtype=dtype)))
        offset = b.op("Add", offset, b.const((tap_displacements(attrs) * (scale - 1)).astype(dtype)))
    # Channels-first first: a Gather then moves whole planes (about 7x faster in
    # onnxruntime than gathering along the innermost axis).
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]
    offset = b.op("Transpose", offset, perm=to_nchw)
    mask = b.op("Transpose", mask, perm=to_nchw)
    if attrs.remove_center:
        # a zero plane: channel 0 sliced off, times zero
        starts, ends, axes = (b.const(np.array([v], dtype=np.int64)) for v in (0, 1, 1))
        zero = b.const(np.array(0, dtype=dtype))
        offset = b.op("Concat", offset, b.op("Mul", b.op("Slice", offset, starts, ends, axes), zero), axis=1)
        mask = b.op("Concat", mask, b.op("Mul", b.op("Slice", mask, starts, ends, axes), zero), axis=1)
    offset_index, mask_index = channel_orders(attrs)
    offset = b.op("Gather", offset, b.const(offset_index), axis=1)
    mask = b.op("Gather", mask, b.const(mask_index), axis=1)
    channels = attrs.channels
    weight = b.const(np.ones((channels, 1, attrs.kernel_h, attrs.kernel_w), dtype=dtype))
    bias = b.const(np.zeros((channels,), dtype=dtype))
    out = b.op("DeformConv", b.op("Transpose", input, perm=to_nchw), weight, offset, bias, mask,
               group=channels, offset_group=attrs.group, kernel_shape=[attrs.kernel_h, attrs.kernel_w],
               strides=[attrs.stride_h, attrs.stride_w],
               pads=[attrs.pad_h, attrs.pad_w, attrs.pad_h, attrs.pad_w],
               dilations=[attrs.dilation_h, attrs.dilation_w])
    return b.op("Transpose", out, perm=to_nhwc)


class TorchScriptBuilder:
    """Builder over a TorchScript exporter graph context (``g`` of a symbolic function)."""

    def __init__(self, g: Any) -> None:
        self.g = g

    def op(self, op_type: str, *inputs: Any, **attrs: Any) -> Any:
        typed = {f"{k}_{'f' if isinstance(v, float) else 'i'}": v for k, v in attrs.items()}
        return self.g.op(op_type, *inputs, **typed)

    def const(self, array: np.ndarray) -> Any:
        import torch

        return self.g.op("Constant", value_t=torch.from_numpy(np.ascontiguousarray(array)))


class OnnxBuilder:
    """Builder collecting ``onnx.NodeProto``s with fresh names under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[Any] = []

    def _name(self) -> str:
        return f"{self.prefix}/{len(self.nodes)}"

    def op(self, op_type: str, *inputs: Any, **attrs: Any) -> str:
        from onnx import helper

        name = self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def const(self, array: np.ndarray) -> str:
        from onnx import helper, numpy_helper

        name = self._name()
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(np.ascontiguousarray(array))))
        return name
