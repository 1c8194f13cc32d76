// CPU kernels of ops_dcnv3::gelu_with_derivative_: y = x * Phi(x) and, in place of x,
// y' = Phi(x) + x * phi(x) (Phi, phi: the standard normal's distribution and density), and
// of ops_dcnv3::bias_gelu_: y in place of x; both at x + bias where a bias (one value per
// column of the last axis) is given.
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

// With kDerivative, y = GELU(x + shift) and x = its derivative; without, x = GELU(x + shift)
// (y unused).
template <int L, bool kDerivative>
DCNV3_INLINE void gelu_block(float* x, float* y, Vec<float, L> shift) {
  using V = Vec<float, L>;
  const V v = load<L, float>(x) + shift;
  if constexpr (kDerivative) {
    V gelu, derivative;
    gelu_lanes<L, float>(v, gelu, derivative);
    store<L>(y, gelu);
    store<L>(x, derivative);
  } else {
    V cdf, phi;
    normal_cdf_pdf<L>(v, cdf, phi);
    store<L>(x, v * cdf);
  }
}

// Values [0, count) of x (and y), plus bias[0, count) where bias is given.
template <int L, bool kDerivative>
DCNV3_INLINE void gelu_span(float* x, float* y, const float* bias, int64_t count) {
  using V = Vec<float, L>;
  int64_t i = 0;
  for (; i + L <= count; i += L) gelu_block<L, kDerivative>(x + i, y + i, bias ? load<L, float>(bias + i) : V{});
  if (i < count) {  // the tail through a zero-padded block: the same arithmetic for every value
    float xs[L] = {}, ys[L], bs[L] = {};
    const size_t bytes = (count - i) * sizeof(float);
    std::memcpy(xs, x + i, bytes);
    if (bias) std::memcpy(bs, bias + i, bytes);
    gelu_block<L, kDerivative>(xs, ys, load<L, float>(bs));
    std::memcpy(x + i, xs, bytes);
    if (kDerivative) std::memcpy(y + i, ys, bytes);
  }
}

// Rows [begin, end) of `cols` values (the bias, if any, spans a row).
template <int L, bool kDerivative>
DCNV3_INLINE void gelu_rows(float* x, float* y, const float* bias, int64_t cols, int64_t begin, int64_t end) {
  if (bias == nullptr) {
    gelu_span<L, kDerivative>(x + begin * cols, kDerivative ? y + begin * cols : nullptr, nullptr,
                              (end - begin) * cols);
    return;
  }
  for (int64_t r = begin; r < end; ++r)
    gelu_span<L, kDerivative>(x + r * cols, kDerivative ? y + r * cols : nullptr, bias, cols);
}

#define DCNV3_GELU_VARIANT(NAME, TARGET, BYTES)                                                        \
  template <bool kDerivative>                                                                          \
  __attribute__((flatten)) TARGET void gelu_##NAME(float* x, float* y, const float* bias, int64_t cols, \
                                                   int64_t b, int64_t e) {                             \
    gelu_rows<BYTES / 4, kDerivative>(x, y, bias, cols, b, e);                                         \
  }
DCNV3_FOR_EACH_ISA(DCNV3_GELU_VARIANT)
#undef DCNV3_GELU_VARIANT

// The contiguous bias of `op`'s input (one value per column), or an undefined tensor.
at::Tensor checked_bias(const char* op, const at::Tensor& input, const std::optional<at::Tensor>& bias) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": input must be float32 or float64, got ", dtype);
  TORCH_CHECK(input.is_contiguous(), op, ": input must be contiguous (it is overwritten in place), got strides ",
              input.strides());
  if (!(bias.has_value() && bias->defined())) return at::Tensor();
  TORCH_CHECK(input.dim() >= 1 && bias->dim() == 1 && bias->size(0) == input.size(-1), op,
              ": bias must have one value per entry of input's last axis (", input.dim() >= 1 ? input.size(-1) : 0,
              "), got shape ", bias->sizes());
  TORCH_CHECK(bias->scalar_type() == dtype && bias->device() == input.device(), op,
              ": bias must match input's dtype and device, got ", bias->scalar_type(), " on ", bias->device());
  return bias->contiguous();
}

// GELU of input (+ bias): into `output` with the derivative into input (kDerivative), or
// into input (output undefined).
template <bool kDerivative>
void gelu_cpu(at::Tensor& input, const at::Tensor& bias, at::Tensor& output) {
  // Rows of `cols` values: with a bias the last axis, else one flat row split in chunks.
  const int64_t cols = bias.defined() ? input.size(-1) : 1;
  const int64_t rows = cols > 0 ? input.numel() / cols : 0;
  const bool is_double = input.scalar_type() == at::kDouble;
  // About 16K values per task either way.
  const int64_t grain = std::max<int64_t>(1, (is_double ? 4096 : 16384) / std::max<int64_t>(cols, 1));
  if (is_double) {
    double* x = input.mutable_data_ptr<double>();
    double* y = kDerivative ? output.mutable_data_ptr<double>() : x;
    const double* b = bias.defined() ? bias.const_data_ptr<double>() : nullptr;
    parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin * cols; i < end * cols; ++i) {
        const double v = x[i] + (b ? b[i % cols] : 0.0);
        double cdf, phi;
        normal_cdf_pdf_scalar(v, cdf, phi);
        y[i] = v * cdf;
        if (kDerivative) x[i] = cdf + v * phi;
      }
    });
    return;
  }
  float* x = input.mutable_data_ptr<float>();
  float* y = kDerivative ? output.mutable_data_ptr<float>() : nullptr;
  const float* b = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  const Isa isa = active_isa(Isa::kAvx512);
  parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
    DCNV3_CALL_ISA(isa, gelu, <kDerivative>, x, y, b, cols, begin, end);
  });
}

at::Tensor gelu_with_derivative_cpu(at::Tensor& input, const std::optional<at::Tensor>& bias) {
  const at::Tensor bias_c = checked_bias("gelu_with_derivative_", input, bias);
  at::Tensor output = at::empty_like(input);
  gelu_cpu<true>(input, bias_c, output);
  return output;
}

at::Tensor& bias_gelu_cpu(at::Tensor& input, const std::optional<at::Tensor>& bias) {
  const at::Tensor bias_c = checked_bias("bias_gelu_", input, bias);
  at::Tensor unused;
  gelu_cpu<false>(input, bias_c, unused);
  return input;
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("gelu_with_derivative_", &dcnv3::gelu_with_derivative_cpu);
  m.impl("bias_gelu_", &dcnv3::bias_gelu_cpu);
}
