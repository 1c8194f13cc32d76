// Schema of ops_dcnv3::gelu_with_derivative_: exact GELU of `input` (+ `bias` along its last
// axis where given), returned as a new tensor, with `input` overwritten by the GELU's
// derivative at the same point (kernel: cpu/gelu_cpu.cpp).
// InternImage's MLP trains through it on CPU (ops_dcnv3/modules/layers.py): the backward is
// then one product with the saved derivative, and the pre-activation, which nothing else
// needs, holds it. The bias comes in here rather than through addmm, which would first
// copy it into every row of the product's output and then read that back.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def("gelu_with_derivative_(Tensor(a!) input, Tensor? bias=None) -> Tensor");
}
