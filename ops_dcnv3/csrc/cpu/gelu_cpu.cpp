// CPU kernel of ops_dcnv3::gelu_with_derivative_: y = x * Phi(x) and, in place of x,
// y' = Phi(x) + x * phi(x) (Phi, phi: the standard normal's distribution and density), at
// x + bias where a bias (one value per column of the last axis) is given.
//
// float32 runs in vectors: phi by exp (exp_nonpositive in cpu_vec.h), the
// normal tail Q(|x|) = phi(x) * M(|x|) with M, the Mills ratio, as t * poly(2t - 1),
// t = 1 / (1 + 0.4 |x|) (a least-squares fit of our own over 0 <= |x| <= 14: relative error
// 2.6e-8 in exact arithmetic, ~3e-7 in float32), and Phi = 1 - Q or Q by the sign, so that
// the negative side keeps its relative precision. One pass over the values; no erf. float64
// takes std::erfc and std::exp per value.
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

constexpr float kMills[] = {0.70853022416881672f,    0.43484195459687813f,   0.13233703298301061f,
                            -0.0092625175863567822f, -0.01643048053379877f,  0.0016191826098510532f,
                            0.0025296442321477196f,  -0.00072125853441093197f, -0.00029867258264262017f,
                            0.00018776030375668493f, -1.8699568673827661e-05f};
constexpr float kInvSqrt2Pi = 0.398942280401432678f;

template <int L>
DCNV3_INLINE void gelu_block(float* __restrict x, float* __restrict y, Vec<float, L> shift) {
  using V = Vec<float, L>;
  const V v = load<L, float>(x) + shift;
  const V z = v < 0.0f ? -v : v;
  // Below e^-80 the tail Q is under 6e-37: exp_nonpositive's zero, not denormal arithmetic.
  const V phi = exp_nonpositive<L>(-0.5f * z * z) * kInvSqrt2Pi;
  const V t = 1.0f / (1.0f + 0.4f * z);
  const V u = 2.0f * t - 1.0f;
  V m = V{} + kMills[10];
  for (int i = 9; i >= 0; --i) m = m * u + kMills[i];
  const V q = phi * t * m;
  const V cdf = v < 0.0f ? q : 1.0f - q;
  store<L>(y, v * cdf);
  store<L>(x, cdf + v * phi);
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
        const double cdf = 0.5 * std::erfc(-v * M_SQRT1_2);
        y[i] = v * cdf;
        x[i] = cdf + v * std::exp(-0.5 * v * v) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
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
