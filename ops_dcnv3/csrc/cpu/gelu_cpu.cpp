// CPU kernel of ops_dcnv3::gelu_with_derivative_: y = x * Phi(x) and, in place of x,
// y' = Phi(x) + x * phi(x) (Phi, phi: the standard normal's distribution and density), at
// x + bias where a bias (one value per column of the last axis) is given.
//
// float32 runs in vectors through normal_cdf_pdf (cpu_vec.h: no erf), one pass over the
// values; float64 takes std::erfc and std::exp per value.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "cpu_vec.h"

namespace dcnv3 {
namespace {

template <int L>
DCNV3_INLINE void gelu_block(float* __restrict x, float* __restrict y, Vec<float, L> shift) {
  using V = Vec<float, L>;
  V gelu, derivative;
  gelu_lanes<L, float>(load<L, float>(x) + shift, gelu, derivative);
  store<L>(y, gelu);
  store<L>(x, derivative);
}

// Values [0, count) of x and y, plus bias[0, count) where bias is given.
template <int L>
DCNV3_INLINE void gelu_span(float* x, float* y, const float* bias, int64_t count) {
  using V = Vec<float, L>;
  int64_t i = 0;
  for (; i + L <= count; i += L) gelu_block<L>(x + i, y + i, bias ? load<L, float>(bias + i) : V{});
  if (i < count) {  // the tail through a zero-padded block: the same arithmetic for every value
    float xs[L] = {}, ys[L], bs[L] = {};
    const size_t bytes = (count - i) * sizeof(float);
    std::memcpy(xs, x + i, bytes);
    if (bias) std::memcpy(bs, bias + i, bytes);
    gelu_block<L>(xs, ys, load<L, float>(bs));
    std::memcpy(x + i, xs, bytes);
    std::memcpy(y + i, ys, bytes);
  }
}

// Rows [begin, end) of `cols` values (the bias, if any, spans a row).
template <int L>
DCNV3_INLINE void gelu_rows(float* x, float* y, const float* bias, int64_t cols, int64_t begin, int64_t end) {
  if (bias == nullptr) {
    gelu_span<L>(x + begin * cols, y + begin * cols, nullptr, (end - begin) * cols);
    return;
  }
  for (int64_t r = begin; r < end; ++r) gelu_span<L>(x + r * cols, y + r * cols, bias, cols);
}

#define DCNV3_GELU_VARIANT(NAME, TARGET, BYTES)                                                     \
  __attribute__((flatten)) TARGET void gelu_##NAME(float* x, float* y, const float* bias, int64_t cols, \
                                                   int64_t b, int64_t e) {                             \
    gelu_rows<BYTES / 4>(x, y, bias, cols, b, e);                                                      \
  }
DCNV3_FOR_EACH_ISA(DCNV3_GELU_VARIANT)
#undef DCNV3_GELU_VARIANT

at::Tensor gelu_with_derivative_cpu(at::Tensor& input, const std::optional<at::Tensor>& bias) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "gelu_with_derivative_: input must be float32 or float64, got ", dtype);
  TORCH_CHECK(input.is_contiguous(), "gelu_with_derivative_: input must be contiguous (it is overwritten "
              "in place), got strides ", input.strides());
  // Rows of `cols` values: with a bias the last axis, else one flat row split in chunks.
  int64_t cols = 1;
  at::Tensor bias_c;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(input.dim() >= 1 && bias->dim() == 1 && bias->size(0) == input.size(-1),
                "gelu_with_derivative_: bias must have one value per entry of input's last axis (",
                input.dim() >= 1 ? input.size(-1) : 0, "), got shape ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == dtype && bias->device() == input.device(),
                "gelu_with_derivative_: bias must match input's dtype and device, got ", bias->scalar_type(),
                " on ", bias->device());
    bias_c = bias->contiguous();
    cols = input.size(-1);
  }
  at::Tensor output = at::empty_like(input);
  const int64_t rows = cols > 0 ? input.numel() / cols : 0;
  // About 16K values per task either way.
  const int64_t grain = std::max<int64_t>(1, (dtype == at::kDouble ? 4096 : 16384) / std::max<int64_t>(cols, 1));
  if (dtype == at::kDouble) {
    double* x = input.mutable_data_ptr<double>();
    double* y = output.mutable_data_ptr<double>();
    const double* b = bias_c.defined() ? bias_c.const_data_ptr<double>() : nullptr;
    parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin * cols; i < end * cols; ++i) {
        const double v = x[i] + (b ? b[i % cols] : 0.0);
        double cdf, phi;
        normal_cdf_pdf_scalar(v, cdf, phi);
        y[i] = v * cdf;
        x[i] = cdf + v * phi;
      }
    });
    return output;
  }
  float* x = input.mutable_data_ptr<float>();
  float* y = output.mutable_data_ptr<float>();
  const float* b = bias_c.defined() ? bias_c.const_data_ptr<float>() : nullptr;
  const Isa isa = active_isa(Isa::kAvx512);
  parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
    DCNV3_CALL_ISA(isa, gelu, , x, y, b, cols, begin, end);
  });
  return output;
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) { m.impl("gelu_with_derivative_", &dcnv3::gelu_with_derivative_cpu); }
