// Schema of ops_dcnv3::gelu_with_derivative_: exact GELU of `input`, returned as a new
// tensor, with `input` overwritten by the GELU's derivative (kernel: cpu/gelu_cpu.cpp).
// InternImage's MLP trains through it on CPU (ops_dcnv3/modules/layers.py): the backward is
// then one product with the saved derivative, and the pre-activation, which nothing else
// needs, holds it.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def("gelu_with_derivative_(Tensor(a!) input) -> Tensor");
}
