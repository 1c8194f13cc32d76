// CPU kernel of ops_dcnv3::layer_norm_last: LayerNorm over the last (contiguous) axis of
// channels-last activations, the norm InternImage applies three times per block.
//
// ATen's CPU LayerNorm spends ~150 ns of bookkeeping per row, which dominates rows of 64 to
// 512 channels (InternImage-T: 2.4 ns per element at 64 channels, float32, one thread).
// Here a row is read once into vector accumulators (sum and sum of squared deviations from
// the row's first value, which keeps the variance exact for rows far from zero), then
// written normalised; rows run in parallel. float64, float32 and bfloat16 (statistics in
// float32). Returns (output, mean, rstd) shaped as ATen's native_layer_norm returns them,
// so its native_layer_norm_backward serves the gradients.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <utility>

#include "cpu_vec.h"

namespace dcnv3 {
namespace {

template <int L, size_t... I>
DCNV3_INLINE Vec<uint16_t, L> odd_halves(Vec<uint16_t, 2 * L> v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (2 * I + 1)...);
}

template <typename scalar_t, int L>
DCNV3_INLINE void store_as(scalar_t* p, Vec<at::opmath_type<scalar_t>, L> v) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    // float -> bfloat16, rounding to nearest even as c10::BFloat16 does, NaN kept NaN: the
    // rounded value's high halves, picked by one shuffle (no per-lane narrowing).
    using VU = Vec<uint32_t, L>;
    VU bits;
    std::memcpy(&bits, &v, sizeof(bits));
    const VU rounded = bits + (VU{} + 0x7FFFu) + ((bits >> 16) & 1u);
    const VU is_nan = (VU)(v != v);
    const VU result = (rounded & ~is_nan) | (is_nan & 0x7FC00000u);
    Vec<uint16_t, 2 * L> halves;
    std::memcpy(&halves, &result, sizeof(halves));
    const Vec<uint16_t, L> narrow = odd_halves<L>(halves, std::make_index_sequence<L>{});
    std::memcpy(p, &narrow, sizeof(narrow));
  } else {
    store<L>(p, v);
  }
}

// Rows [begin, end) of `channels` values each. L lanes per vector; the channel count's
// remainder (channels % L) runs scalar.
template <typename scalar_t, int L>
DCNV3_INLINE void rows(const scalar_t* __restrict x, const at::opmath_type<scalar_t>* __restrict weight,
                       const at::opmath_type<scalar_t>* __restrict bias, scalar_t* __restrict y,
                       at::opmath_type<scalar_t>* __restrict mean_out, at::opmath_type<scalar_t>* __restrict rstd_out,
                       int64_t channels, double eps, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<acc_t, L>;
  const int64_t whole = channels / L * L;
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* row = x + r * channels;
    scalar_t* out = y + r * channels;
    const acc_t shift = static_cast<acc_t>(row[0]);
    V sum{}, squares{};
    int64_t c = 0;
    for (; c < whole; c += L) {
      const V d = load<L, acc_t>(row + c) - shift;
      sum += d;
      squares += d * d;
    }
    acc_t s = horizontal_sum<L, acc_t>(sum), q = horizontal_sum<L, acc_t>(squares);
    for (; c < channels; ++c) {
      const acc_t d = static_cast<acc_t>(row[c]) - shift;
      s += d;
      q += d * d;
    }
    const acc_t n = static_cast<acc_t>(channels);
    const acc_t centred = s / n;  // mean - shift
    const acc_t variance = std::max(q / n - centred * centred, acc_t(0));
    const acc_t rstd = acc_t(1) / std::sqrt(variance + static_cast<acc_t>(eps));
    const acc_t mean = shift + centred;
    mean_out[r] = mean;
    rstd_out[r] = rstd;
    c = 0;
    for (; c < whole; c += L) {
      V v = (load<L, acc_t>(row + c) - mean) * rstd;
      if (weight != nullptr) v *= load<L, acc_t>(weight + c);
      if (bias != nullptr) v += load<L, acc_t>(bias + c);
      store_as<scalar_t, L>(out + c, v);
    }
    for (; c < channels; ++c) {
      acc_t v = (static_cast<acc_t>(row[c]) - mean) * rstd;
      if (weight != nullptr) v *= weight[c];
      if (bias != nullptr) v += bias[c];
      out[c] = static_cast<scalar_t>(v);
    }
  }
}

#define DCNV3_LN_VARIANT(NAME, TARGET, BYTES)                                                     \
  template <typename scalar_t>                                                                    \
  __attribute__((target(TARGET), flatten)) void rows_##NAME(                                     \
      const scalar_t* x, const at::opmath_type<scalar_t>* w, const at::opmath_type<scalar_t>* b,   \
      scalar_t* y,                                                                                \
      at::opmath_type<scalar_t>* mean, at::opmath_type<scalar_t>* rstd, int64_t channels,         \
      double eps, int64_t begin, int64_t end) {                                                   \
    rows<scalar_t, kWide<at::opmath_type<scalar_t>, BYTES>>(x, w, b, y, mean, rstd, channels, eps, \
                                                            begin, end);                          \
  }
#if defined(__x86_64__) && defined(__GNUC__)
DCNV3_LN_VARIANT(avx512, "avx512f,avx512bw,avx512vl,avx2,fma", 64)
DCNV3_LN_VARIANT(avx2, "avx2,fma", 32)
#endif
#undef DCNV3_LN_VARIANT

template <typename scalar_t>
__attribute__((flatten)) void rows_default(const scalar_t* x, const at::opmath_type<scalar_t>* w,
                                           const at::opmath_type<scalar_t>* b, scalar_t* y, at::opmath_type<scalar_t>* mean,
                                           at::opmath_type<scalar_t>* rstd, int64_t channels,
                                           double eps, int64_t begin, int64_t end) {
  rows<scalar_t, kWide<at::opmath_type<scalar_t>, 16>>(x, w, b, y, mean, rstd, channels, eps, begin, end);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_last_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps) {
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) > 0,
              "layer_norm_last: input needs a non-empty last axis, got shape ", input.sizes());
  const int64_t channels = input.size(-1);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16,
              "layer_norm_last: input must be float64, float32 or bfloat16, got ", dtype);
  // Parameters in the input's dtype, or float32 for bfloat16 input (autocast keeps them
  // float32); the kernel reads them in the accumulation type.
  const auto stat_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  for (const auto* param : {&weight, &bias}) {
    if (param->has_value()) {
      const auto param_dtype = (*param)->scalar_type();
      TORCH_CHECK((*param)->dim() == 1 && (*param)->size(0) == channels &&
                      (param_dtype == dtype || (dtype == at::kBFloat16 && param_dtype == at::kFloat)),
                  "layer_norm_last: weight and bias must be 1-D of ", channels, " values of the input's dtype ",
                  dtype, " (or float32 for bfloat16 input), got shape ", (*param)->sizes(), " dtype ", param_dtype);
    }
  }
  const at::Tensor x = input.contiguous();
  const at::Tensor w = weight.has_value() ? weight->to(stat_dtype).contiguous() : at::Tensor();
  const at::Tensor b = bias.has_value() ? bias->to(stat_dtype).contiguous() : at::Tensor();
  at::Tensor output = at::empty_like(x);
  auto stat_sizes = x.sizes().vec();
  stat_sizes.back() = 1;
  at::Tensor mean = at::empty(stat_sizes, x.options().dtype(stat_dtype));
  at::Tensor rstd = at::empty(stat_sizes, x.options().dtype(stat_dtype));
  const int64_t row_count = x.numel() / channels;
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "layer_norm_last_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* wp = w.defined() ? w.const_data_ptr<acc_t>() : nullptr;
    const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = output.mutable_data_ptr<scalar_t>();
    acc_t* mp = mean.mutable_data_ptr<acc_t>();
    acc_t* rp = rstd.mutable_data_ptr<acc_t>();
    // ~16 KiB of input per task: enough work to amortise the scheduling.
    const int64_t grain = std::max<int64_t>(1, 4096 / channels);
    at::parallel_for(0, row_count, grain, [&](int64_t begin, int64_t end) {
      switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
        case Isa::kAvx512:
          return rows_avx512<scalar_t>(xp, wp, bp, yp, mp, rp, channels, eps, begin, end);
        case Isa::kAvx2:
          return rows_avx2<scalar_t>(xp, wp, bp, yp, mp, rp, channels, eps, begin, end);
#endif
        default:
          return rows_default<scalar_t>(xp, wp, bp, yp, mp, rp, channels, eps, begin, end);
      }
    });
  });
  return {output, mean, rstd};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) { m.impl("layer_norm_last", &dcnv3::layer_norm_last_cpu); }
