// Schemas of the CPU GELU ops (kernels: cpu/gelu_cpu.cpp), exact GELU of `input` (+ `bias`
// along its last axis where given):
// - gelu_with_derivative_ returns it as a new tensor and overwrites `input` with the GELU's
//   derivative at the same point. InternImage's MLP trains through it on CPU
//   (ops_dcnv3/modules/layers.py): the backward is then one product with the saved
//   derivative, and the pre-activation, which nothing else needs, holds it.
// - bias_gelu_ overwrites `input` with it (CPU inference of fc1 on ATen's product).
// The bias comes in here rather than through addmm, which would first copy it into every
// row of the product's output and then read that back.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def("gelu_with_derivative_(Tensor(a!) input, Tensor? bias=None) -> Tensor");
  m.def("bias_gelu_(Tensor(a!) input, Tensor? bias=None) -> Tensor(a!)");
}
