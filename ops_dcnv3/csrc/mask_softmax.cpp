// Schemas of ops_dcnv3::mask_softmax: DCNv3's modulation mask, the softmax over each
// group's P points, taken from logits laid out (group * P, pixels) (the mask linear's
// transposed product, whose long pixel axis vectorises) and returned as (pixels, group * P),
// the layout the DCNv3 op reads; and its backward, which returns the logits' gradient in the
// logits' layout (kernels: cpu/mask_softmax_cpu.cpp; other devices keep ATen's softmax, see
// ops_dcnv3/modules/dcnv3.py). bfloat16 logits give a float32 mask (no backward).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def("mask_softmax(Tensor logits, int group) -> Tensor");
  m.def("mask_softmax_backward(Tensor grad_output, Tensor output, int group) -> Tensor");
}
