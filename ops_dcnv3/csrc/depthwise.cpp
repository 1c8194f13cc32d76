// Schemas of DCNv3's depthwise convolution on channels-last (N, H, W, C) activations
// (k x k, k odd, stride 1, zero padding (k - 1) / 2; kernels: cpu/depthwise_cpu.cpp and
// cpu/layer_norm_cpu.cpp, geometry in cpu/depthwise.h; other devices keep ATen's conv2d,
// see ops_dcnv3/modules/layers.py). depthwise_conv_last and its backward, returning
// (grad_input, grad_weight, grad_bias), serve training; depthwise_layer_norm_gelu_last is
// the whole depthwise path for inference, GELU(LayerNorm(conv(input))), the convolution's
// output never written.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def("depthwise_conv_last(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  m.def("depthwise_conv_last_backward(Tensor grad_output, Tensor input, Tensor weight) -> (Tensor, Tensor, Tensor)");
  m.def("depthwise_layer_norm_gelu_last(Tensor input, Tensor conv_weight, Tensor? conv_bias, Tensor? weight, "
        "Tensor? bias, float eps) -> Tensor");
}
