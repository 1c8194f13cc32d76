// The depthwise k x k convolution of channels-last (N, H, W, C) activations (stride 1,
// dilation 1, zero padding (k - 1) / 2: DCNv3's dw_conv), shared by its CPU kernels
// (depthwise_cpu.cpp: the convolution and its backward for training; layer_norm_cpu.cpp:
// fused with LayerNorm and GELU for inference). Vectors run along the channels, so every
// tap is one contiguous load of the input and one of the taps, (k * k, C): the weight
// transposed (and, for the input gradient, flipped).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <initializer_list>
#include <optional>

#include "cpu_vec.h"

namespace dcnv3 {
namespace {

// Calls body(t, pixel) for each tap t = i * K + j of output (y, col) that falls inside the
// image, pixel being the input's row * width + column there; K is compile-time and the
// loops unroll, so t is a constant in each call.
template <int K, typename Body>
DCNV3_INLINE void for_each_tap(int64_t y, int64_t col, int64_t i0, int64_t i1, int64_t width, const Body& body) {
  constexpr int pad = (K - 1) / 2;
#pragma GCC unroll 8
  for (int i = 0; i < K; ++i) {
    if (i < i0 || i >= i1) continue;
#pragma GCC unroll 8
    for (int j = 0; j < K; ++j) {
      const int64_t at = col + j - pad;
      if (at < 0 || at >= width) continue;
      body(i * K + j, (y + i - pad) * width + at);
    }
  }
}

// Output row y of one image (x: that image) into out (W, C): sum over the taps inside the
// image of taps[i * k + j] * x[y + i - pad][col + j - pad], plus conv_bias where given.
// K > 0 fixes k at compile time (DCNv3's 3): the taps of a channel vector then stay in
// registers along the row and the tap loops unroll; K = 0 takes k at run time.
template <typename scalar_t, int L, int K>
DCNV3_INLINE void depthwise_row(const scalar_t* __restrict x, const at::opmath_type<scalar_t>* __restrict taps,
                                const at::opmath_type<scalar_t>* __restrict conv_bias,
                                at::opmath_type<scalar_t>* __restrict out, int64_t height, int64_t width,
                                int64_t channels, int64_t k_arg, int64_t y) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<acc_t, L>;
  const int64_t k = K > 0 ? K : k_arg, pad = (k - 1) / 2, whole = channels / L * L;
  const int64_t i0 = std::max<int64_t>(0, pad - y), i1 = std::min<int64_t>(k, height + pad - y);
  if constexpr (K > 0) {
    for (int64_t c = 0; c < whole; c += L) {
      V tap[K * K];
      for (int t = 0; t < K * K; ++t) tap[t] = load<L, acc_t>(taps + t * channels + c);
      const V start = conv_bias != nullptr ? load<L, acc_t>(conv_bias + c) : V{};
      for (int64_t col = 0; col < width; ++col) {
        V acc = start;
        for_each_tap<K>(y, col, i0, i1, width, [&](int t, int64_t pixel) {
          acc += tap[t] * load<L, acc_t>(x + pixel * channels + c);
        });
        store<L>(out + col * channels + c, acc);
      }
    }
  } else {
    for (int64_t col = 0; col < width; ++col) {
      const int64_t j0 = std::max<int64_t>(0, pad - col), j1 = std::min<int64_t>(k, width + pad - col);
      for (int64_t c = 0; c < whole; c += L) {
        V acc = conv_bias != nullptr ? load<L, acc_t>(conv_bias + c) : V{};
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j)
            acc += load<L, acc_t>(taps + (i * k + j) * channels + c) *
                   load<L, acc_t>(x + ((y + i - pad) * width + col + j - pad) * channels + c);
        store<L>(out + col * channels + c, acc);
      }
    }
  }
  // The channels past the last whole vector, one at a time.
  for (int64_t col = 0; col < width; ++col) {
    const int64_t j0 = std::max<int64_t>(0, pad - col), j1 = std::min<int64_t>(k, width + pad - col);
    acc_t* o = out + col * channels;
    for (int64_t c = whole; c < channels; ++c) {
      acc_t acc = conv_bias != nullptr ? conv_bias[c] : acc_t(0);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j)
          acc += taps[(i * k + j) * channels + c] *
                 static_cast<acc_t>(x[((y + i - pad) * width + col + j - pad) * channels + c]);
      o[c] = acc;
    }
  }
}

// depthwise_row with K = 3 where k is 3, else the run-time k.
template <typename scalar_t, int L>
DCNV3_INLINE void depthwise_row_any(const scalar_t* x, const at::opmath_type<scalar_t>* taps,
                                    const at::opmath_type<scalar_t>* conv_bias, at::opmath_type<scalar_t>* out,
                                    int64_t height, int64_t width, int64_t channels, int64_t k, int64_t y) {
  if (k == 3) depthwise_row<scalar_t, L, 3>(x, taps, conv_bias, out, height, width, channels, k, y);
  else depthwise_row<scalar_t, L, 0>(x, taps, conv_bias, out, height, width, channels, k, y);
}

// The taps (k * k, C) of a (C, 1, k, k) weight; `flipped` reverses them (k * k - 1 - t),
// which turns the convolution into its transpose (the input gradient).
inline at::Tensor depthwise_taps(const at::Tensor& weight, bool flipped) {
  const int64_t channels = weight.size(0), taps = weight.size(2) * weight.size(3);
  const at::Tensor w = flipped ? weight.flip({2, 3}) : weight;
  return w.reshape({channels, taps}).t().contiguous();
}

// input (N, H, W, C) float32/float64; weight (C, 1, k, k), k odd, input's dtype; each of
// `vectors` (named by `vector_names`) absent or 1-D of C values of the input's dtype.
inline void check_depthwise_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                 std::initializer_list<const std::optional<at::Tensor>*> vectors,
                                 const char* vector_names) {
  TORCH_CHECK(input.dim() == 4 && input.size(-1) > 0,
              op, ": input must be (N, H, W, C) with C > 0, got shape ", input.sizes());
  const int64_t channels = input.size(3);
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": input must be float64 or float32, got ", dtype);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == channels && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1,
              op, ": conv_weight must be (C, 1, k, k) with C = ", channels, " and k odd, got shape ",
              weight.sizes());
  TORCH_CHECK(weight.scalar_type() == dtype, op, ": conv_weight must be ", dtype, ", got ", weight.scalar_type());
  for (const auto* vector : vectors) {
    if (vector->has_value()) {
      TORCH_CHECK((*vector)->dim() == 1 && (*vector)->size(0) == channels && (*vector)->scalar_type() == dtype,
                  op, ": ", vector_names, " must be 1-D of ", channels, " values of the input's dtype ", dtype,
                  ", got shape ", (*vector)->sizes(), " dtype ", (*vector)->scalar_type());
    }
  }
}

}  // namespace
}  // namespace dcnv3
