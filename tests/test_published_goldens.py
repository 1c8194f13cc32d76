"""Our DCNv3 (reference, every CPU kernel path, both modules) and InternImage classifier
against golden numbers computed with the published pure-PyTorch InternImage code
(``../shared/data/published_goldens.pt``, see its README): the operator on a grid of
settings in float64 with all three gradients, the DCNv3 module and three small models
(T-style, post-norm with layer scale, H-style block features) with their weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classification.models import InternImage
from ops_dcnv3 import dcnv3, dcnv3_core_pytorch, kernel_available
from ops_dcnv3.modules.dcnv3 import DCNv3, DCNv3_pytorch


def _cpu_isas() -> list[str]:
    """The CPU kernel paths this machine can run (DCNV3_CPU_ISA values)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isas = ["default"]
    if " avx2 " in flags and " fma " in flags:
        isas.append("avx2")
    if all(f" {f} " in flags for f in ("avx512f", "avx512bw", "avx512vl")):
        isas.append("avx512")
    return isas


@pytest.fixture
def cpu_isas() -> list[str]:
    return _cpu_isas()


GOLDENS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "published_goldens.pt"
F64 = dict(atol=1e-10, rtol=1e-8)
F32 = dict(atol=2e-5, rtol=1e-4)


def _load() -> dict:
    # ../shared sits beside the repository on every machine, CI included.
    assert GOLDENS.is_file(), f"{GOLDENS} not found: ../shared/data must sit beside the repo"
    return torch.load(GOLDENS, map_location="cpu", weights_only=True)


GOLDEN = _load()
OP_CASES = GOLDEN["op"]
MODULE_CASES = GOLDEN["module"]
MODEL_CASES = GOLDEN["model"]


def _op_id(case: dict) -> str:
    a = case["args"]
    return (
        f"k{a['kernel_h']}x{a['kernel_w']}-s{a['stride_h']}-p{a['pad_h']}-d{a['dilation_h']}"
        f"-os{a['offset_scale']}-rc{a['remove_center']}"
    )


def _op_args(case: dict) -> tuple:
    a = case["args"]
    return (
        a["kernel_h"],
        a["kernel_w"],
        a["stride_h"],
        a["stride_w"],
        a["pad_h"],
        a["pad_w"],
        a["dilation_h"],
        a["dilation_w"],
        a["group"],
        a["group_channels"],
        float(a["offset_scale"]),
    )


def _check_op(call, case: dict, dtype: torch.dtype, tol: dict) -> None:
    """Forward and the gradients of input, offset and mask (for the golden grad_output)."""
    inputs = [case[k].to(dtype).requires_grad_() for k in ("input", "offset", "mask")]
    out = call(*inputs)
    torch.testing.assert_close(out, case["output"].to(dtype), **tol, msg=lambda m: f"output: {m}")
    grads = torch.autograd.grad(out, inputs, case["grad_output"].to(dtype))
    for name, got in zip(("grad_input", "grad_offset", "grad_mask"), grads):
        torch.testing.assert_close(got, case[name].to(dtype), **tol, msg=lambda m, n=name: f"{n}: {m}")


def test_the_goldens_cover_the_operator_settings():
    """The file is what the README says: 44 operator cases spanning kernel 1/3/5 (and 3x5),
    stride 1/2, padding 0-2, dilation 1/2, offset_scale 1/2, remove_center on and off."""
    assert len(OP_CASES) == 44 and len(MODULE_CASES) == 3 and len(MODEL_CASES) == 3
    args = [c["args"] for c in OP_CASES]
    assert {(a["kernel_h"], a["kernel_w"]) for a in args} == {(1, 1), (3, 3), (5, 5), (3, 5)}
    assert {a["remove_center"] for a in args} == {0, 1}
    assert all(c["output"].dtype == torch.float64 for c in OP_CASES)
    # non-trivial numbers: the gradients are not all zero
    assert all(c["grad_offset"].abs().max() > 0 for c in OP_CASES)


@pytest.mark.parametrize("case", OP_CASES, ids=_op_id)
def test_reference_matches_published(case):
    remove_center = bool(case["args"]["remove_center"])
    _check_op(
        lambda x, o, m: dcnv3_core_pytorch(x, o, m, *_op_args(case), remove_center), case, torch.float64, F64
    )


@pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")
@pytest.mark.parametrize("case", OP_CASES, ids=_op_id)
def test_cpu_kernel_matches_published(case, cpu_isas, monkeypatch):
    """Every CPU code path (DCNV3_CPU_ISA), float64; im2col_step 1 and 64 (batching only)."""
    remove_center = bool(case["args"]["remove_center"])
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        for step in (1, 64):
            _check_op(
                lambda x, o, m, s=step: dcnv3(x, o, m, *_op_args(case), s, remove_center),
                case,
                torch.float64,
                F64,
            )


@pytest.mark.skipif(not kernel_available("cpu"), reason="ops_dcnv3 extension not built")
@pytest.mark.parametrize("case", OP_CASES[::7], ids=_op_id)
def test_cpu_kernel_float32_matches_published(case, cpu_isas, monkeypatch):
    remove_center = bool(case["args"]["remove_center"])
    for isa in cpu_isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        _check_op(
            lambda x, o, m: dcnv3(x, o, m, *_op_args(case), 64, remove_center),
            case,
            torch.float32,
            dict(atol=1e-4, rtol=1e-4),
        )


@pytest.mark.parametrize("module_class", [DCNv3, DCNv3_pytorch], ids=["DCNv3", "DCNv3_pytorch"])
@pytest.mark.parametrize(
    "case", MODULE_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c["kwargs"].items())
)
def test_module_matches_published(case, module_class, cpu_isas, monkeypatch):
    module = module_class(**case["kwargs"]).eval()
    module.load_state_dict(case["state_dict"], strict=True)
    isas = cpu_isas if module_class is DCNv3 and kernel_available("cpu") else ["default"]
    for isa in isas:
        monkeypatch.setenv("DCNV3_CPU_ISA", isa)
        with torch.no_grad():
            out = module(case["input"])
        torch.testing.assert_close(out, case["output"], **F32)


@pytest.mark.parametrize("core_op", ["DCNv3", "DCNv3_pytorch"])
@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_model_matches_published(name, core_op):
    case = MODEL_CASES[name]
    model = InternImage(core_op=core_op, **case["kwargs"]).eval()
    model.load_state_dict(case["state_dict"], strict=True)
    with torch.no_grad():
        logits = model(case["input"])
    torch.testing.assert_close(logits, case["output"], atol=1e-4, rtol=1e-4)
    # the logits separate the images: a model that ignored its input would not match
    assert (case["output"][0] - case["output"][1]).abs().max() > 1e-3
