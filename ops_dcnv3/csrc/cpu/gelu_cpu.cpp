// CPU kernel of ops_dcnv3::gelu_with_derivative_: y = x * Phi(x) and, in place of x,
// y' = Phi(x) + x * phi(x) (Phi, phi: the standard normal's distribution and density).
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

#include <cmath>

#include "cpu_vec.h"

namespace dcnv3 {
namespace {

constexpr float kMills[] = {0.70853022416881672f,    0.43484195459687813f,   0.13233703298301061f,
                            -0.0092625175863567822f, -0.01643048053379877f,  0.0016191826098510532f,
                            0.0025296442321477196f,  -0.00072125853441093197f, -0.00029867258264262017f,
                            0.00018776030375668493f, -1.8699568673827661e-05f};
constexpr float kInvSqrt2Pi = 0.398942280401432678f;

template <int L>
DCNV3_INLINE void gelu_block(float* __restrict x, float* __restrict y) {
  using V = Vec<float, L>;
  const V v = load<L, float>(x);
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

template <int L>
DCNV3_INLINE void gelu_range(float* x, float* y, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + L <= end; i += L) gelu_block<L>(x + i, y + i);
  if (i < end) {  // the tail through a zero-padded block: the same arithmetic for every value
    float xs[L] = {}, ys[L];
    std::memcpy(xs, x + i, (end - i) * sizeof(float));
    gelu_block<L>(xs, ys);
    std::memcpy(x + i, xs, (end - i) * sizeof(float));
    std::memcpy(y + i, ys, (end - i) * sizeof(float));
  }
}

#define DCNV3_GELU_VARIANT(NAME, TARGET, BYTES)                                                   \
  __attribute__((flatten)) TARGET void gelu_##NAME(float* x, float* y, int64_t b, int64_t e) { \
    gelu_range<BYTES / 4>(x, y, b, e);                                                              \
  }
DCNV3_FOR_EACH_ISA(DCNV3_GELU_VARIANT)
#undef DCNV3_GELU_VARIANT

at::Tensor gelu_with_derivative_cpu(at::Tensor& input) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "gelu_with_derivative_: input must be float32 or float64, got ", dtype);
  TORCH_CHECK(input.is_contiguous(), "gelu_with_derivative_: input must be contiguous (it is overwritten "
              "in place), got strides ", input.strides());
  at::Tensor output = at::empty_like(input);
  const int64_t n = input.numel();
  if (dtype == at::kDouble) {
    double* x = input.mutable_data_ptr<double>();
    double* y = output.mutable_data_ptr<double>();
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const double v = x[i];
        const double cdf = 0.5 * std::erfc(-v * M_SQRT1_2);
        y[i] = v * cdf;
        x[i] = cdf + v * std::exp(-0.5 * v * v) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
      }
    });
    return output;
  }
  float* x = input.mutable_data_ptr<float>();
  float* y = output.mutable_data_ptr<float>();
  const Isa isa = active_isa(Isa::kAvx512);
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    DCNV3_CALL_ISA(isa, gelu, , x, y, begin, end);
  });
  return output;
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) { m.impl("gelu_with_derivative_", &dcnv3::gelu_with_derivative_cpu); }
