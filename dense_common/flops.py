"""The cost of the DCNv3 sampling core, which FLOP counters (mmengine's
``get_model_complexity_info``, fvcore) do not see: they count the projections around it
(input/offset/mask/output linears, the depthwise conv) but not the bilinear sampling and
the mask-weighted sum. Per output location, kernel point and channel that is ~5 FLOPs
(the published convention: 4 bilinear taps + the mask multiply-add)."""

from __future__ import annotations

import torch
from torch import nn

from ops_dcnv3.modules import DCNv3, DCNv3_pytorch

FLOPS_PER_SAMPLE = 5


def dcnv3_core_flops(model: nn.Module, inputs: torch.Tensor | tuple) -> int:
    """FLOPs of every DCNv3 core in ``model`` for one forward pass on ``inputs`` (a tensor
    or a tuple of positional arguments); runs the model once under ``no_grad``."""
    total = 0

    def count(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        n, h, w, c = args[0].shape  # DCNv3 modules take channels-last input
        points = module.kernel_size * module.kernel_size - int(module.remove_center)
        h_out = (h + 2 * module.pad - module.dilation * (module.kernel_size - 1) - 1) // module.stride + 1
        w_out = (w + 2 * module.pad - module.dilation * (module.kernel_size - 1) - 1) // module.stride + 1
        total += FLOPS_PER_SAMPLE * n * h_out * w_out * points * c

    dcn_modules = [m for m in model.modules() if isinstance(m, (DCNv3, DCNv3_pytorch))]
    handles = [m.register_forward_hook(count) for m in dcn_modules]
    try:
        with torch.no_grad():
            model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def model_complexity(model: nn.Module, inputs: tuple) -> dict:
    """mmengine's operator FLOP count (one trace) and parameter count, without its per-operator
    warnings: ``uncounted`` maps each operator that has no FLOP formula (elementwise ops,
    NMS, RoIAlign, and ``ops_dcnv3::dcnv3``, whose core :func:`dcnv3_core_flops` adds) to its
    number of calls, for :func:`uncounted_summary`'s one line."""
    from mmengine.analysis import FlopAnalyzer, parameter_count

    analyzer = FlopAnalyzer(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    flops = analyzer.total()
    return dict(flops=flops, params=parameter_count(model)[""], uncounted=dict(analyzer.unsupported_ops()))


def uncounted_summary(uncounted: dict[str, int]) -> str:
    """One line naming the operators left out of the count (and how often they ran)."""
    if not uncounted:
        return "every operator is counted"
    names = ", ".join(f"{name.split('::')[-1]} x{calls}" for name, calls in sorted(uncounted.items()))
    return (f"not counted (no FLOP formula; elementwise/bookkeeping, the DCNv3 core is added above): {names}")
