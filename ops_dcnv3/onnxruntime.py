"""ONNX Runtime support for DCNv3 exports.

A plugin-form export (``mmdeploy::TRTDCNv3`` nodes, see :mod:`ops_dcnv3.export`) is for
TensorRT; onnxruntime has no such kernel. :func:`make_session` therefore lowers each
node, in an in-memory copy of the model (the file is not changed), to the standard
``DeformConv`` form of the portable export (:mod:`ops_dcnv3.onnx_deform`), converting the
model to opset 19 first where it is older (onnx's version converter). The session is
then a plain one and runs as fast as the portable file.

Where the conversion is impossible (an operator the converter cannot move to opset 19),
the nodes are served instead by an onnxruntime-extensions Python custom op calling our
compiled CPU kernel (``torch.ops.ops_dcnv3.dcnv3``): correct, but each call pays the
extension's Python round trip (outputs travel as Python lists: about 10 ms per
InternImage-T call), several times slower. onnxruntime-extensions serves Python ops only
in its own domain (``ai.onnx.contrib``), so the nodes are moved there.

A portable-form export needs none of this: :func:`make_session` then just opens a
normal session."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

PLUGIN_OP = "TRTDCNv3"
PLUGIN_DOMAIN = "mmdeploy"

INT_ATTRS = ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
             "dilation_w", "group", "group_channels", "im2col_step", "remove_center")

_registered_domain: str | None = None


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    # Zero-copy when onnxruntime hands over a writable contiguous float32 buffer.
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array, order="C", copy=True)
    return torch.from_numpy(array)


def _dcnv3_numpy(input: np.ndarray, offset: np.ndarray, mask: np.ndarray, *, kernel_h: int,
                 kernel_w: int, stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                 dilation_h: int, dilation_w: int, group: int, group_channels: int,
                 offset_scale: float, im2col_step: int, remove_center: int) -> np.ndarray:
    with torch.inference_mode():
        out = torch.ops.ops_dcnv3.dcnv3(
            _as_tensor(input), _as_tensor(offset), _as_tensor(mask), kernel_h, kernel_w, stride_h,
            stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
            float(offset_scale), im2col_step, bool(remove_center))
    return out.numpy()


def register_custom_op() -> str:
    """Registers the Python implementation of TRTDCNv3 with onnxruntime-extensions (once)
    and returns the domain it is served under."""
    global _registered_domain
    if _registered_domain is None:
        from onnxruntime_extensions import PyCustomOpDef, default_opset_domain, onnx_op

        from .ops import kernel_available

        if not kernel_available("cpu"):
            raise RuntimeError("ops_dcnv3: the compiled CPU kernel is not built; the TRTDCNv3 "
                               "onnxruntime op needs it (or export with the portable form)")
        attrs = {name: PyCustomOpDef.dt_int64 for name in INT_ATTRS}
        attrs["offset_scale"] = PyCustomOpDef.dt_float
        onnx_op(op_type=PLUGIN_OP, inputs=[PyCustomOpDef.dt_float] * 3,
                outputs=[PyCustomOpDef.dt_float], attrs=attrs)(_dcnv3_numpy)
        _registered_domain = default_opset_domain()
    return _registered_domain


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The mmdeploy::TRTDCNv3 nodes of the main graph."""
    return [n for n in model.graph.node if n.op_type == PLUGIN_OP and n.domain == PLUGIN_DOMAIN]


def _attrs_of(node: onnx.NodeProto):
    from .onnx_deform import DCNv3Attrs

    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    missing = [name for name in (*INT_ATTRS, "offset_scale") if name not in values and name != "im2col_step"]
    if missing:
        raise ValueError(f"TRTDCNv3 node {node.name!r} lacks attributes {missing}")
    return DCNv3Attrs(*(int(values[k]) for k in INT_ATTRS[:10]), float(values["offset_scale"]),
                      bool(values.get("remove_center", 0)))


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def lower_plugin_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every mmdeploy::TRTDCNv3 node replaced by its standard
    DeformConv form (converted to opset 19 first where older). Raises ValueError where
    the version converter cannot convert the model."""
    from onnx import version_converter

    from .export import DEFORM_CONV_MIN_OPSET
    from .onnx_deform import OnnxBuilder, emit_deform_conv

    if default_opset(model) < DEFORM_CONV_MIN_OPSET:
        try:
            model = version_converter.convert_version(model, DEFORM_CONV_MIN_OPSET)
        except Exception as error:  # the converter raises its own RuntimeError/ValidationError
            raise ValueError(f"cannot convert the model from opset {default_opset(model)} to "
                             f"{DEFORM_CONV_MIN_OPSET}: {error}") from error
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())  # leave the caller's copy alone
    nodes = []
    for index, node in enumerate(model.graph.node):
        if not (node.op_type == PLUGIN_OP and node.domain == PLUGIN_DOMAIN):
            nodes.append(node)
            continue
        builder = OnnxBuilder(f"{node.name or PLUGIN_OP}_{index}/deform_conv")
        emit_deform_conv(builder, *node.input, _attrs_of(node))
        builder.nodes[-1].output[0] = node.output[0]
        nodes.extend(builder.nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not plugin_nodes(model):
        kept = [o for o in model.opset_import if o.domain != PLUGIN_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model


def make_session(model: str | os.PathLike | bytes | onnx.ModelProto,
                 providers: Sequence[str] | None = None,
                 sess_options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An onnxruntime session for a DCNv3 export of either form.

    Plugin nodes are lowered to DeformConv (:func:`lower_plugin_nodes`); where that is
    impossible they are served by our CPU kernel through onnxruntime-extensions (so the
    session runs on CPU whatever the providers), with a warning. Without plugin nodes
    this is a plain ``InferenceSession``."""
    providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, bytes):
        proto = onnx.load_from_string(model)
    else:
        proto = onnx.load(os.fspath(model))
    nodes = plugin_nodes(proto)
    if not nodes:
        data = model if isinstance(model, bytes) else proto.SerializeToString()
        return ort.InferenceSession(data, sess_options=sess_options, providers=providers)

    try:
        lowered = lower_plugin_nodes(proto)
    except ValueError as error:
        warnings.warn(f"ops_dcnv3: TRTDCNv3 nodes not lowered to DeformConv ({error}); serving "
                      "them through the slower onnxruntime-extensions Python op", RuntimeWarning,
                      stacklevel=2)
    else:
        return ort.InferenceSession(lowered.SerializeToString(), sess_options=sess_options,
                                    providers=providers)
    return python_op_session(proto, providers, sess_options)


def python_op_session(proto: onnx.ModelProto, providers: Sequence[str],
                      sess_options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """A session serving the TRTDCNv3 nodes of ``proto`` through the onnxruntime-extensions
    Python op (our CPU kernel). The fallback of :func:`make_session`."""
    from onnxruntime_extensions import get_library_path

    domain = register_custom_op()
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # leave the caller's copy alone
    for node in plugin_nodes(proto):
        node.domain = domain
    if not any(o.domain == domain for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    options = sess_options if sess_options is not None else ort.SessionOptions()
    if sess_options is None:
        # The op runs on torch's own thread pool; onnxruntime's spinning idle workers would
        # compete with it for the cores (measured: several times slower on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=providers)
