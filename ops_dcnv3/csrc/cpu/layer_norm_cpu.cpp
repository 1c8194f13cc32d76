// CPU kernel of ops_dcnv3::layer_norm_last: LayerNorm over the last (contiguous) axis of
// channels-last activations, the norm InternImage applies three times per block.
//
// ATen's CPU LayerNorm spends ~150 ns of bookkeeping per row, which dominates rows of 64 to
// 512 channels (InternImage-T: 2.4 ns per element at 64 channels, float32, one thread).
// Here a row is read once into vector accumulators (sum and sum of squared deviations from
// the row's first value, which keeps the variance exact for rows far from zero), then
// written normalised; rows run in parallel. float64, float32 and bfloat16 (statistics in
// float32). Returns (output, mean, rstd) shaped as ATen's native_layer_norm returns them.
//
// layer_norm_gelu_last applies the exact GELU in the same pass (the norm's output is never
// written), and in training also writes the GELU's derivative, which the backward then
// multiplies into the incoming gradient as it reads it (grad_scale): DCNv3's depthwise path
// (conv, LayerNorm, GELU) costs one pass less each way than LayerNorm and ATen's GELU.
//
// The backward (float64, float32) reads each row twice while it is in L1: once for the two
// row sums of the input gradient, once to write it. The weight/bias gradients are summed
// per block of rows into a (blocks, 2, C) scratch, the blocks fixed by the row count alone
// (not the thread count), so the result does not depend on the threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_vec.h"
#include "depthwise.h"

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
// remainder (channels % L) runs scalar. With kGelu the output is GELU(norm) and, where
// `derivative` is given, GELU'(norm) goes there.
template <typename scalar_t, int L, bool kGelu>
DCNV3_INLINE void rows(const scalar_t* __restrict x, const at::opmath_type<scalar_t>* __restrict weight,
                       const at::opmath_type<scalar_t>* __restrict bias, scalar_t* __restrict y,
                       at::opmath_type<scalar_t>* __restrict derivative,
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
    acc_t* d_row = kGelu && derivative != nullptr ? derivative + r * channels : nullptr;
    c = 0;
    for (; c < whole; c += L) {
      V v = (load<L, acc_t>(row + c) - mean) * rstd;
      if (weight != nullptr) v *= load<L, acc_t>(weight + c);
      if (bias != nullptr) v += load<L, acc_t>(bias + c);
      if constexpr (kGelu) {
        V slope;
        gelu_lanes<L, acc_t>(v, v, slope);
        if (d_row != nullptr) store<L>(d_row + c, slope);
      }
      store_as<scalar_t, L>(out + c, v);
    }
    for (; c < channels; ++c) {
      acc_t v = (static_cast<acc_t>(row[c]) - mean) * rstd;
      if (weight != nullptr) v *= weight[c];
      if (bias != nullptr) v += bias[c];
      if constexpr (kGelu) {
        acc_t cdf, phi;
        normal_cdf_pdf_scalar<acc_t>(v, cdf, phi);
        if (d_row != nullptr) d_row[c] = cdf + v * phi;
        v *= cdf;
      }
      out[c] = static_cast<scalar_t>(v);
    }
  }
}

#define DCNV3_LN_VARIANT(NAME, TARGET, BYTES)                                                     \
  template <typename scalar_t, bool kGelu>                                                        \
  __attribute__((flatten)) TARGET void rows_##NAME(                                     \
      std::bool_constant<kGelu>, const scalar_t* x, const at::opmath_type<scalar_t>* w,           \
      const at::opmath_type<scalar_t>* b,                                                         \
      scalar_t* y, at::opmath_type<scalar_t>* d,                                                  \
      at::opmath_type<scalar_t>* mean, at::opmath_type<scalar_t>* rstd, int64_t channels,         \
      double eps, int64_t begin, int64_t end) {                                                   \
    rows<scalar_t, kWide<at::opmath_type<scalar_t>, BYTES>, kGelu>(x, w, b, y, d, mean, rstd, channels, \
                                                                   eps, begin, end);              \
  }
DCNV3_FOR_EACH_ISA(DCNV3_LN_VARIANT)
#undef DCNV3_LN_VARIANT

// (output, derivative, mean, rstd) of layer_norm_last (gelu false) and layer_norm_gelu_last;
// `derivative` is defined only where asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_norm_impl(
    const char* op, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, bool gelu, bool with_derivative) {
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) > 0,
              op, ": input needs a non-empty last axis, got shape ", input.sizes());
  const int64_t channels = input.size(-1);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16,
              op, ": input must be float64, float32 or bfloat16, got ", dtype);
  TORCH_CHECK(!with_derivative || dtype != at::kBFloat16,
              op, ": derivative=True needs float32 or float64 input (the backward's dtypes), got ", dtype);
  // Parameters in the input's dtype, or float32 for bfloat16 input (autocast keeps them
  // float32); the kernel reads them in the accumulation type.
  const auto stat_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  for (const auto* param : {&weight, &bias}) {
    if (param->has_value()) {
      const auto param_dtype = (*param)->scalar_type();
      TORCH_CHECK((*param)->dim() == 1 && (*param)->size(0) == channels &&
                      (param_dtype == dtype || (dtype == at::kBFloat16 && param_dtype == at::kFloat)),
                  op, ": weight and bias must be 1-D of ", channels, " values of the input's dtype ",
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
  at::Tensor derivative = with_derivative ? at::empty_like(x) : at::Tensor();
  const int64_t row_count = x.numel() / channels;
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "layer_norm_last_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* wp = w.defined() ? w.const_data_ptr<acc_t>() : nullptr;
    const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    scalar_t* yp = output.mutable_data_ptr<scalar_t>();
    acc_t* dp = derivative.defined() ? derivative.mutable_data_ptr<acc_t>() : nullptr;
    acc_t* mp = mean.mutable_data_ptr<acc_t>();
    acc_t* rp = rstd.mutable_data_ptr<acc_t>();
    // ~16 KiB of input per task: enough work to amortise the scheduling.
    const int64_t grain = std::max<int64_t>(1, 4096 / channels);
    parallel_chunks(row_count, grain, [&](int64_t begin, int64_t end) {
      if (gelu) {
        DCNV3_CALL_ISA(isa, rows, <scalar_t>, std::true_type{}, xp, wp, bp, yp, dp, mp, rp, channels, eps, begin,
                       end);
      } else {
        DCNV3_CALL_ISA(isa, rows, <scalar_t>, std::false_type{}, xp, wp, bp, yp, dp, mp, rp, channels, eps, begin,
                       end);
      }
    });
  });
  return {output, derivative, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_last_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps) {
  auto [output, derivative, mean, rstd] = layer_norm_impl("layer_norm_last", input, weight, bias, eps, false, false);
  return {output, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_norm_gelu_last_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, bool derivative) {
  return layer_norm_impl("layer_norm_gelu_last", input, weight, bias, eps, true, derivative);
}


// ---------------------------------------------------------------- depthwise conv + LN + GELU
// DCNv3's depthwise path in inference: the depthwise convolution (depthwise.h) of one image
// row at a time goes into a (W, C) scratch that stays in L1/L2, and the LayerNorm + GELU
// rows above read it from there, so the convolution's output never goes to memory.
#define DCNV3_DW_VARIANT(NAME, TARGET, BYTES)                                                             \
  template <typename scalar_t>                                                                           \
  __attribute__((flatten)) TARGET void depthwise_rows_##NAME(                                            \
      const scalar_t* x, const at::opmath_type<scalar_t>* taps, const at::opmath_type<scalar_t>* cb,      \
      const at::opmath_type<scalar_t>* w, const at::opmath_type<scalar_t>* b, scalar_t* y,                 \
      at::opmath_type<scalar_t>* scratch, int64_t height, int64_t width, int64_t channels, int64_t k,      \
      double eps, int64_t begin, int64_t end) {                                                          \
    constexpr int L = kWide<at::opmath_type<scalar_t>, BYTES>;                                            \
    at::opmath_type<scalar_t>* conv = scratch;                                                           \
    at::opmath_type<scalar_t>* stats = scratch + width * channels;                                       \
    for (int64_t r = begin; r < end; ++r) { /* r: image * height + output row */                         \
      const int64_t image = r / height, row = r % height;                                                \
      depthwise_row_any<scalar_t, L>(x + image * height * width * channels, taps, cb, conv, height, width,   \
                                 channels, k, row);                                                      \
      rows<at::opmath_type<scalar_t>, L, true>(conv, w, b, y + r * width * channels, nullptr, stats,      \
                                               stats + width, channels, eps, 0, width);                  \
    }                                                                                                    \
  }
DCNV3_FOR_EACH_ISA(DCNV3_DW_VARIANT)
#undef DCNV3_DW_VARIANT

at::Tensor depthwise_layer_norm_gelu_last_cpu(const at::Tensor& input, const at::Tensor& conv_weight,
                                              const std::optional<at::Tensor>& conv_bias,
                                              const std::optional<at::Tensor>& weight,
                                              const std::optional<at::Tensor>& bias, double eps) {
  const char* op = "depthwise_layer_norm_gelu_last";
  check_depthwise_args(op, input, conv_weight, {&conv_bias, &weight, &bias}, "conv_bias, weight and bias");
  const int64_t channels = input.size(3), height = input.size(1), width = input.size(2);
  const auto dtype = input.scalar_type();
  const int64_t k = conv_weight.size(2);
  const at::Tensor x = input.contiguous();
  const at::Tensor taps = depthwise_taps(conv_weight, false);
  const at::Tensor cb = conv_bias.has_value() ? conv_bias->contiguous() : at::Tensor();
  const at::Tensor w = weight.has_value() ? weight->contiguous() : at::Tensor();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor output = at::empty_like(x);
  const int64_t row_count = x.size(0) * height;
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES(dtype, "depthwise_layer_norm_gelu_last_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = taps.const_data_ptr<scalar_t>();
    const scalar_t* cbp = cb.defined() ? cb.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* wp = w.defined() ? w.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = output.mutable_data_ptr<scalar_t>();
    const int64_t scratch_size = width * (channels + 2);  // the row's convolution, its means and rstds
    parallel_chunks(
        row_count, 1, [&] { return std::vector<scalar_t>(scratch_size); },
        [&](int64_t begin, int64_t end, std::vector<scalar_t>& scratch) {
          DCNV3_CALL_ISA(isa, depthwise_rows, <scalar_t>, xp, tp, cbp, wp, bp, yp, scratch.data(), height, width,
                         channels, k, eps, begin, end);
        });
  });
  return output;
}

// ---------------------------------------------------------------- backward
// Rows [begin, end): grad_input, and this block's sums of dy * xhat and dy into part_w and
// part_b (C values each, zeroed by the caller); dy is the incoming gradient times `scale`
// where given (the GELU's derivative of layer_norm_gelu_last).
template <typename acc_t, int L>
DCNV3_INLINE void rows_backward(const acc_t* __restrict dy, const acc_t* __restrict scale, const acc_t* __restrict x,
                                const acc_t* __restrict mean, const acc_t* __restrict rstd,
                                const acc_t* __restrict weight, acc_t* __restrict dx,
                                acc_t* __restrict part_w, acc_t* __restrict part_b, int64_t channels,
                                int64_t begin, int64_t end) {
  using V = Vec<acc_t, L>;
  const int64_t whole = channels / L * L;
  const acc_t inv_n = acc_t(1) / static_cast<acc_t>(channels);
  for (int64_t r = begin; r < end; ++r) {
    const acc_t* g_row = dy + r * channels;
    const acc_t* k_row = scale != nullptr ? scale + r * channels : nullptr;
    const acc_t* x_row = x + r * channels;
    const acc_t m = mean[r], s = rstd[r];
    // The incoming gradient at channel c, times `scale` where given.
    const auto grad_vector = [&](int64_t c) {
      return k_row != nullptr ? load<L, acc_t>(g_row + c) * load<L, acc_t>(k_row + c) : load<L, acc_t>(g_row + c);
    };
    const auto grad_value = [&](int64_t c) { return k_row != nullptr ? g_row[c] * k_row[c] : g_row[c]; };
    V sum_g{}, sum_gx{};
    int64_t c = 0;
    for (; c < whole; c += L) {
      const V g = grad_vector(c);
      const V xhat = (load<L, acc_t>(x_row + c) - m) * s;
      const V gw = weight != nullptr ? g * load<L, acc_t>(weight + c) : g;
      sum_g += gw;
      sum_gx += gw * xhat;
      store<L>(part_w + c, load<L, acc_t>(part_w + c) + g * xhat);
      store<L>(part_b + c, load<L, acc_t>(part_b + c) + g);
    }
    acc_t a = horizontal_sum<L, acc_t>(sum_g), b = horizontal_sum<L, acc_t>(sum_gx);
    for (; c < channels; ++c) {
      const acc_t g = grad_value(c), xhat = (x_row[c] - m) * s;
      const acc_t gw = weight != nullptr ? g * weight[c] : g;
      a += gw;
      b += gw * xhat;
      part_w[c] += g * xhat;
      part_b[c] += g;
    }
    a *= inv_n;
    b *= inv_n;
    acc_t* out = dx + r * channels;
    for (c = 0; c < whole; c += L) {
      const V g = grad_vector(c);
      const V xhat = (load<L, acc_t>(x_row + c) - m) * s;
      const V gw = weight != nullptr ? g * load<L, acc_t>(weight + c) : g;
      store<L>(out + c, (gw - a - xhat * b) * s);
    }
    for (; c < channels; ++c) {
      const acc_t g = grad_value(c);
      const acc_t xhat = (x_row[c] - m) * s;
      const acc_t gw = weight != nullptr ? g * weight[c] : g;
      out[c] = (gw - a - xhat * b) * s;
    }
  }
}

#define DCNV3_LN_BACKWARD_VARIANT(NAME, TARGET, BYTES)                                             \
  template <typename acc_t>                                                                       \
  __attribute__((flatten)) TARGET void rows_backward_##NAME(                             \
      const acc_t* dy, const acc_t* k, const acc_t* x, const acc_t* mean, const acc_t* rstd,       \
      const acc_t* w, acc_t* dx, acc_t* pw, acc_t* pb, int64_t channels, int64_t begin, int64_t end) { \
    rows_backward<acc_t, kWide<acc_t, BYTES>>(dy, k, x, mean, rstd, w, dx, pw, pb, channels, begin, end); \
  }
DCNV3_FOR_EACH_ISA(DCNV3_LN_BACKWARD_VARIANT)
#undef DCNV3_LN_BACKWARD_VARIANT

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_last_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& rstd, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& grad_scale) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "layer_norm_last_backward: input must be float64 or float32, got ", dtype);
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) > 0,
              "layer_norm_last_backward: input needs a non-empty last axis, got shape ", input.sizes());
  TORCH_CHECK(grad_output.sizes() == input.sizes() && grad_output.scalar_type() == dtype,
              "layer_norm_last_backward: grad_output must match the input (shape ", input.sizes(),
              ", dtype ", dtype, "), got shape ", grad_output.sizes(), " dtype ", grad_output.scalar_type());
  const int64_t channels = input.size(-1);
  const int64_t row_count = input.numel() / channels;
  for (const auto* stat : {&mean, &rstd}) {
    TORCH_CHECK(stat->numel() == row_count && stat->scalar_type() == dtype,
                "layer_norm_last_backward: mean and rstd must hold one ", dtype, " value per row (",
                row_count, "), got shape ", stat->sizes(), " dtype ", stat->scalar_type());
  }
  if (weight.has_value()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == channels && weight->scalar_type() == dtype,
                "layer_norm_last_backward: weight must be 1-D of ", channels, " ", dtype,
                " values, got shape ", weight->sizes(), " dtype ", weight->scalar_type());
  }
  const at::Tensor dy = grad_output.contiguous(), x = input.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  const at::Tensor w = weight.has_value() ? weight->contiguous() : at::Tensor();
  if (grad_scale.has_value()) {
    TORCH_CHECK(grad_scale->sizes() == input.sizes() && grad_scale->scalar_type() == dtype,
                "layer_norm_last_backward: grad_scale must match the input (shape ", input.sizes(), ", dtype ",
                dtype, "), got shape ", grad_scale->sizes(), " dtype ", grad_scale->scalar_type());
  }
  const at::Tensor k = grad_scale.has_value() ? grad_scale->contiguous() : at::Tensor();
  at::Tensor grad_input = at::empty_like(x);
  // Fixed blocks of rows (64 at most, 16 rows at least), each summing its own share of the
  // parameter gradients.
  const int64_t blocks = std::clamp<int64_t>((row_count + 15) / 16, 1, 64);
  const int64_t rows_per_block = (row_count + blocks - 1) / blocks;
  at::Tensor partial = at::zeros({blocks, 2, channels}, x.options());
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES(dtype, "layer_norm_last_backward_cpu", [&] {
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* kp = k.defined() ? k.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* mp = m.const_data_ptr<scalar_t>();
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    const scalar_t* wp = w.defined() ? w.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = grad_input.mutable_data_ptr<scalar_t>();
    scalar_t* pp = partial.mutable_data_ptr<scalar_t>();
    parallel_chunks(blocks, 1, [&](int64_t first, int64_t last) {
      for (int64_t block = first; block < last; ++block) {
        const int64_t begin = block * rows_per_block;
        const int64_t end = std::min(row_count, begin + rows_per_block);
        scalar_t* pw = pp + block * 2 * channels;
        scalar_t* pb = pw + channels;
        DCNV3_CALL_ISA(isa, rows_backward, <scalar_t>, dyp, kp, xp, mp, rp, wp, dxp, pw, pb, channels, begin,
                       end);
      }
    });
  });
  const at::Tensor sums = partial.sum(0);  // (2, C): dy * xhat, dy
  return {grad_input, sums[0], sums[1]};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("layer_norm_last", &dcnv3::layer_norm_last_cpu);
  m.impl("layer_norm_gelu_last", &dcnv3::layer_norm_gelu_last_cpu);
  m.impl("depthwise_layer_norm_gelu_last", &dcnv3::depthwise_layer_norm_gelu_last_cpu);
  m.impl("layer_norm_last_backward", &dcnv3::layer_norm_last_backward_cpu);
}
