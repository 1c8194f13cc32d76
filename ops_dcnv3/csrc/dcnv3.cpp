// The one schema of the DCNv3 operator. Backends register kernels in cpu/ and cuda/;
// autograd, fake (meta) kernels and the ONNX symbolic are registered from Python
// (ops_dcnv3/ops.py), beside the thin wrapper.
#include <Python.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "dcnv3.h"

namespace dcnv3 {

Geometry make_geometry(const at::Tensor& input, const at::Tensor& offset,
                       const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS) {
  TORCH_CHECK(input.dim() == 4, "dcnv3: input must be (N, H, W, C), got ", input.sizes());
  TORCH_CHECK(kernel_h >= 1 && kernel_w >= 1 && stride_h >= 1 && stride_w >= 1 &&
                  dilation_h >= 1 && dilation_w >= 1 && pad_h >= 0 && pad_w >= 0 &&
                  group >= 1 && group_channels >= 1 && im2col_step >= 1,
              "dcnv3: kernel, stride, dilation, group, group_channels and im2col_step must "
              "be >= 1 and pad >= 0");
  TORCH_CHECK(!remove_center || (kernel_h % 2 == 1 && kernel_w % 2 == 1),
              "dcnv3: remove_center needs an odd kernel");
  TORCH_CHECK(input.size(3) == group * group_channels, "dcnv3: input channels ",
              input.size(3), " != group * group_channels = ", group * group_channels);
  const int64_t out_h = (input.size(1) + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) / stride_h + 1;
  const int64_t out_w = (input.size(2) + 2 * pad_w - (dilation_w * (kernel_w - 1) + 1)) / stride_w + 1;
  TORCH_CHECK(out_h > 0 && out_w > 0, "dcnv3: empty output (", out_h, "x", out_w, ")");
  const int64_t points = kernel_h * kernel_w - (remove_center ? 1 : 0);
  const int64_t n = input.size(0);
  TORCH_CHECK(offset.sizes() == at::IntArrayRef({n, out_h, out_w, group * points * 2}),
              "dcnv3: offset must be ", at::IntArrayRef({n, out_h, out_w, group * points * 2}),
              ", got ", offset.sizes());
  TORCH_CHECK(mask.sizes() == at::IntArrayRef({n, out_h, out_w, group * points}),
              "dcnv3: mask must be ", at::IntArrayRef({n, out_h, out_w, group * points}),
              ", got ", mask.sizes());
  TORCH_CHECK(offset.scalar_type() == input.scalar_type() &&
                  mask.scalar_type() == input.scalar_type(),
              "dcnv3: input, offset and mask must share a dtype");
  TORCH_CHECK(offset.device() == input.device() && mask.device() == input.device(),
              "dcnv3: input, offset and mask must be on one device");
  TORCH_CHECK(input.numel() < (int64_t(1) << 31) && offset.numel() < (int64_t(1) << 31),
              "dcnv3: tensors over 2^31 elements are not supported");

  Geometry g;
  g.height = static_cast<int>(input.size(1));
  g.width = static_cast<int>(input.size(2));
  g.channels = static_cast<int>(input.size(3));
  g.out_height = static_cast<int>(out_h);
  g.out_width = static_cast<int>(out_w);
  g.group = static_cast<int>(group);
  g.group_channels = static_cast<int>(group_channels);
  g.kernel_h = static_cast<int>(kernel_h);
  g.kernel_w = static_cast<int>(kernel_w);
  g.stride_h = static_cast<int>(stride_h);
  g.stride_w = static_cast<int>(stride_w);
  g.pad_h = static_cast<int>(pad_h);
  g.pad_w = static_cast<int>(pad_w);
  g.dilation_h = static_cast<int>(dilation_h);
  g.dilation_w = static_cast<int>(dilation_w);
  g.points = static_cast<int>(points);
  g.remove_center = remove_center;
  g.offset_scale = offset_scale;
  return g;
}

ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& offset,
                            const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS) {
  ForwardCall call;
  call.g = make_geometry(input, offset, mask, DCNV3_GEOMETRY_ARGS);
  call.batch = input.size(0);
  call.input = input.contiguous();
  call.offset = offset.contiguous();
  call.mask = mask.contiguous();
  call.output = at::empty({call.batch, call.g.out_height, call.g.out_width, call.g.channels},
                          call.input.options());
  return call;
}

BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& offset, const at::Tensor& mask,
                              DCNV3_GEOMETRY_PARAMS) {
  BackwardCall call;
  call.g = make_geometry(input, offset, mask, DCNV3_GEOMETRY_ARGS);
  call.batch = input.size(0);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({call.batch, call.g.out_height,
                                                      call.g.out_width, call.g.channels}),
              "dcnv3_backward: grad_output has shape ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == input.device(),
              "dcnv3_backward: grad_output must be on the input's device");
  call.grad_output = grad_output.to(input.scalar_type()).contiguous();
  call.input = input.contiguous();
  call.offset = offset.contiguous();
  call.mask = mask.contiguous();
  const auto acc_dtype = at::toOpMathType(input.scalar_type());
  call.grad_input = at::zeros(input.sizes(), call.input.options().dtype(acc_dtype));
  call.grad_offset = at::empty_like(call.offset);
  call.grad_mask = at::empty_like(call.mask);
  return call;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> BackwardCall::gradients() const {
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace dcnv3

TORCH_LIBRARY(ops_dcnv3, m) {
  m.def(
      "dcnv3(Tensor input, Tensor offset, Tensor mask, int kernel_h, int kernel_w, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, "
      "int group, int group_channels, float offset_scale, int im2col_step, "
      "bool remove_center) -> Tensor");
  m.def(
      "dcnv3_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor mask, "
      "int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w, "
      "int dilation_h, int dilation_w, int group, int group_channels, float offset_scale, "
      "int im2col_step, bool remove_center) -> (Tensor, Tensor, Tensor)");
}

// Importing ops_dcnv3._C runs the registrations above; the module itself is empty.
static struct PyModuleDef dcnv3_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&dcnv3_module); }
