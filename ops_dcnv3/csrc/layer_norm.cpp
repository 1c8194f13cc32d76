// Schemas of ops_dcnv3::layer_norm_last: LayerNorm over the last axis, returning
// (output, mean, rstd) as aten::native_layer_norm does, and its backward, fed those mean
// and rstd, returning (grad_input, grad_weight, grad_bias) (kernels: cpu/layer_norm_cpu.cpp;
// other devices keep ATen's layer_norm, see ops_dcnv3/modules/layers.py).
// layer_norm_gelu_last is GELU(LayerNorm(input)) in one pass, returning (output,
// derivative, mean, rstd) with the GELU's derivative at the norm's output where
// `derivative` (float32/float64; an undefined tensor otherwise); the backward's grad_scale
// multiplies the incoming gradient by it. (depthwise_layer_norm_gelu_last: depthwise.cpp.)
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def("layer_norm_last(Tensor input, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("layer_norm_gelu_last(Tensor input, Tensor? weight, Tensor? bias, float eps, bool derivative) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
  m.def("layer_norm_last_backward(Tensor grad_output, Tensor input, Tensor mean, Tensor rstd, "
        "Tensor? weight, Tensor? grad_scale=None) -> (Tensor, Tensor, Tensor)");
}
