// CPU kernels of ops_dcnv3::depthwise_conv_last and its backward: DCNv3's depthwise
// convolution on channels-last activations for training (depthwise.h has the geometry).
//
// ATen's (oneDNN's) depthwise backward at InternImage-T's level 0 took 3-8 ms a call, 4-10x
// its forward. Here the input gradient is the same convolution with the taps flipped, and
// the weight/bias gradients are summed per fixed block of rows into a (blocks, k * k + 1, C)
// scratch, the blocks fixed by the row count alone (not the thread count), so the result
// does not depend on the threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "cpu_vec.h"
#include "depthwise.h"

namespace dcnv3 {
namespace {

// Output rows [begin, end) of the N * H rows: out = conv(x) (+ bias).
#define DCNV3_DWCONV_VARIANT(NAME, TARGET, BYTES)                                                          \
  template <typename scalar_t>                                                                            \
  __attribute__((flatten)) TARGET void conv_rows_##NAME(const scalar_t* x, const scalar_t* taps,           \
                                                        const scalar_t* bias, scalar_t* out, int64_t height, \
                                                        int64_t width, int64_t channels, int64_t k,        \
                                                        int64_t begin, int64_t end) {                      \
    for (int64_t r = begin; r < end; ++r) {                                                                \
      const int64_t image = r / height;                                                                    \
      depthwise_row_any<scalar_t, kWide<scalar_t, BYTES>>(x + image * height * width * channels, taps, bias,   \
                                                      out + r * width * channels, height, width, channels, \
                                                      k, r % height);                                      \
    }                                                                                                      \
  }
DCNV3_FOR_EACH_ISA(DCNV3_DWCONV_VARIANT)
#undef DCNV3_DWCONV_VARIANT

// Adds row y's contributions to the weight gradient part[(i * k + j) * C + c] (the sum of
// grad[y][col] * x[y + i - pad][col + j - pad] over the row) and to the bias gradient
// part[k * k * C + c] (the sum of grad[y][col]). One channel vector at a time, its k * k + 1
// sums held across the whole row: in registers for a compile-time K (3), in `acc` (L1,
// 64-byte aligned, k * k + 1 vectors) for K = 0.
template <typename scalar_t, int L, int K>
DCNV3_INLINE void weight_grad_row(const scalar_t* __restrict x, const scalar_t* __restrict grad,
                                  scalar_t* __restrict part, scalar_t* __restrict acc, int64_t height,
                                  int64_t width, int64_t channels, int64_t k_arg, int64_t y) {
  using V = Vec<scalar_t, L>;
  const int64_t k = K > 0 ? K : k_arg, pad = (k - 1) / 2, taps = k * k, whole = channels / L * L;
  const int64_t i0 = std::max<int64_t>(0, pad - y), i1 = std::min<int64_t>(k, height + pad - y);
  for (int64_t c = 0; c < whole; c += L) {
    V fixed[K > 0 ? K * K + 1 : 1];
    V* sums = K > 0 ? fixed : reinterpret_cast<V*>(acc);
    for (int64_t t = 0; t <= taps; ++t) sums[t] = V{};
    for (int64_t col = 0; col < width; ++col) {
      const V g = load<L, scalar_t>(grad + col * channels + c);
      sums[taps] += g;
      if constexpr (K > 0) {
        for_each_tap<K>(y, col, i0, i1, width, [&](int t, int64_t pixel) {
          sums[t] += g * load<L, scalar_t>(x + pixel * channels + c);
        });
      } else {
        const int64_t j0 = std::max<int64_t>(0, pad - col), j1 = std::min<int64_t>(k, width + pad - col);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j)
            sums[i * k + j] += g * load<L, scalar_t>(x + ((y + i - pad) * width + col + j - pad) * channels + c);
      }
    }
    for (int64_t t = 0; t <= taps; ++t)
      store<L>(part + t * channels + c, load<L, scalar_t>(part + t * channels + c) + sums[t]);
  }
  for (int64_t c = whole; c < channels; ++c) {
    for (int64_t col = 0; col < width; ++col) {
      const int64_t j0 = std::max<int64_t>(0, pad - col), j1 = std::min<int64_t>(k, width + pad - col);
      const scalar_t g = grad[col * channels + c];
      part[taps * channels + c] += g;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j)
          part[(i * k + j) * channels + c] += g * x[((y + i - pad) * width + col + j - pad) * channels + c];
    }
  }
}

#define DCNV3_DWGRAD_VARIANT(NAME, TARGET, BYTES)                                                             \
  template <typename scalar_t>                                                                               \
  __attribute__((flatten)) TARGET void weight_grad_rows_##NAME(const scalar_t* x, const scalar_t* grad,       \
                                                               scalar_t* part, scalar_t* acc, int64_t height, \
                                                               int64_t width, int64_t channels, int64_t k,    \
                                                               int64_t begin, int64_t end) {                  \
    for (int64_t r = begin; r < end; ++r) {                                                                   \
      const int64_t image = r / height;                                                                       \
      const scalar_t* image_x = x + image * height * width * channels;                                        \
      const scalar_t* row_grad = grad + r * width * channels;                                                 \
      if (k == 3)                                                                                             \
        weight_grad_row<scalar_t, kWide<scalar_t, BYTES>, 3>(image_x, row_grad, part, acc, height, width,     \
                                                             channels, k, r % height);                        \
      else                                                                                                    \
        weight_grad_row<scalar_t, kWide<scalar_t, BYTES>, 0>(image_x, row_grad, part, acc, height, width,     \
                                                             channels, k, r % height);                        \
    }                                                                                                         \
  }
DCNV3_FOR_EACH_ISA(DCNV3_DWGRAD_VARIANT)
#undef DCNV3_DWGRAD_VARIANT

// out[r] = conv(x) with `taps` (+ bias) for all N * H rows, in parallel.
void run_conv(const at::Tensor& x, const at::Tensor& taps, const at::Tensor& bias, at::Tensor& out, int64_t k) {
  const int64_t height = x.size(1), width = x.size(2), channels = x.size(3);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width * channels));
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_conv_last_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = taps.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    parallel_chunks(x.size(0) * height, grain, [&](int64_t begin, int64_t end) {
      DCNV3_CALL_ISA(isa, conv_rows, <scalar_t>, xp, tp, bp, op, height, width, channels, k, begin, end);
    });
  });
}

at::Tensor depthwise_conv_last_cpu(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  check_depthwise_args("depthwise_conv_last", input, weight, {&bias}, "bias");
  const at::Tensor x = input.contiguous();
  at::Tensor output = at::empty_like(x);
  run_conv(x, depthwise_taps(weight, false), bias.has_value() ? bias->contiguous() : at::Tensor(), output,
           weight.size(2));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv_last_backward_cpu(const at::Tensor& grad_output,
                                                                              const at::Tensor& input,
                                                                              const at::Tensor& weight) {
  const char* op = "depthwise_conv_last_backward";
  check_depthwise_args(op, input, weight, {}, "");
  TORCH_CHECK(grad_output.sizes() == input.sizes() && grad_output.scalar_type() == input.scalar_type(),
              op, ": grad_output must match the input's shape ", input.sizes(), " and dtype ", input.scalar_type(),
              ", got ", grad_output.sizes(), " ", grad_output.scalar_type());
  const at::Tensor x = input.contiguous(), grad = grad_output.contiguous();
  const int64_t height = x.size(1), width = x.size(2), channels = x.size(3), k = weight.size(2);
  at::Tensor grad_input = at::empty_like(x);
  run_conv(grad, depthwise_taps(weight, true), at::Tensor(), grad_input, k);
  // Weight and bias gradients: blocks of rows_per_block rows, fixed by the shape alone.
  const int64_t row_count = x.size(0) * height;
  const int64_t rows_per_block = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width * channels));
  const int64_t blocks = std::max<int64_t>(1, (row_count + rows_per_block - 1) / rows_per_block);
  at::Tensor partial = at::zeros({blocks, k * k + 1, channels}, x.options());
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_conv_last_backward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    scalar_t* pp = partial.mutable_data_ptr<scalar_t>();
    const int64_t lanes = 64 / sizeof(scalar_t);  // room for the widest variant's vectors
    parallel_chunks(
        blocks, 1, [&] { return at::empty({(k * k + 1) * lanes + lanes}, x.options()); },
        [&](int64_t first, int64_t last, at::Tensor& scratch) {
          // 64-byte aligned vector sums
          auto address = reinterpret_cast<uintptr_t>(scratch.mutable_data_ptr<scalar_t>());
          scalar_t* acc = reinterpret_cast<scalar_t*>((address + 63) & ~uintptr_t(63));
          for (int64_t block = first; block < last; ++block) {
            const int64_t begin = block * rows_per_block, end = std::min(row_count, begin + rows_per_block);
            DCNV3_CALL_ISA(isa, weight_grad_rows, <scalar_t>, xp, gp, pp + block * (k * k + 1) * channels, acc,
                           height, width, channels, k, begin, end);
          }
        });
  });
  const at::Tensor sums = partial.sum(0);  // (k * k + 1, C)
  at::Tensor grad_weight = sums.narrow(0, 0, k * k).t().reshape({channels, 1, k, k}).contiguous();
  return {grad_input, grad_weight, sums[k * k].contiguous()};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("depthwise_conv_last", &dcnv3::depthwise_conv_last_cpu);
  m.impl("depthwise_conv_last_backward", &dcnv3::depthwise_conv_last_backward_cpu);
}
