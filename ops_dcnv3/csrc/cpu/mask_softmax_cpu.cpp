// CPU kernels of ops_dcnv3::mask_softmax and its backward. Blocks of L pixels: the (group *
// P) rows of a block are L-lane vectors (contiguous in the (group * P, pixels) logits), the
// softmax over a group's P rows is lane-wise, and one transposition through a per-thread
// scratch turns the block into the (pixels, group * P) output (and back in the backward).
// This replaces ATen's softmax plus two transposing copies (forward, backward) per block.
// bfloat16 logits (CPU autocast inference) give a float32 mask: the DCNv3 op computes in
// float32 anyway, so the mask skips a round trip through bfloat16.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cpu_vec.h"

namespace dcnv3 {
namespace {

template <int L, typename acc_t>
DCNV3_INLINE Vec<acc_t, L> exp_lanes(Vec<acc_t, L> a) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return exp_nonpositive<L>(a);
  } else {
    for (int j = 0; j < L; ++j) a[j] = std::exp(a[j]);
    return a;
  }
}

// Pixels [p0, p0 + live) of the forward; scratch holds rows * L values.
template <int L, typename in_t, typename acc_t>
DCNV3_INLINE void forward_block(const in_t* __restrict logits, acc_t* __restrict out, int64_t pixels,
                                int group, int points, int64_t p0, int live, acc_t* __restrict scratch) {
  using V = Vec<acc_t, L>;
  const int rows = group * points;
  for (int r = 0; r < rows; ++r) {  // gather the block's rows (a zero-padded partial block)
    const in_t* src = logits + r * pixels + p0;
    if (live == L) {
      store<L>(scratch + r * L, load<L, acc_t>(src));
    } else {
      for (int j = 0; j < L; ++j) scratch[r * L + j] = j < live ? static_cast<acc_t>(src[j]) : acc_t(0);
    }
  }
  for (int g = 0; g < group; ++g) {
    acc_t* rows_g = scratch + g * points * L;
    V top = load<L, acc_t>(rows_g);
    for (int p = 1; p < points; ++p) {
      const V v = load<L, acc_t>(rows_g + p * L);
      top = v > top ? v : top;
    }
    V sum{};
    for (int p = 0; p < points; ++p) {
      const V e = exp_lanes<L, acc_t>(load<L, acc_t>(rows_g + p * L) - top);
      store<L>(rows_g + p * L, e);
      sum += e;
    }
    const V inv = acc_t(1) / sum;
    for (int p = 0; p < points; ++p) store<L>(rows_g + p * L, load<L, acc_t>(rows_g + p * L) * inv);
  }
  for (int j = 0; j < live; ++j) {
    acc_t* dst = out + (p0 + j) * rows;
    for (int r = 0; r < rows; ++r) dst[r] = scratch[r * L + j];
  }
}

// Pixels [p0, p0 + live) of the backward: grad_logits = y * (g - sum_p g * y) per group.
template <int L, typename acc_t>
DCNV3_INLINE void backward_block(const acc_t* __restrict grad, const acc_t* __restrict y,
                                 acc_t* __restrict grad_logits, int64_t pixels, int group, int points,
                                 int64_t p0, int live, acc_t* __restrict scratch) {
  using V = Vec<acc_t, L>;
  const int rows = group * points;
  acc_t* gs = scratch;
  acc_t* ys = scratch + rows * L;
  if (live < L) std::fill(scratch, scratch + 2 * rows * L, acc_t(0));  // a partial block's padding
  for (int j = 0; j < live; ++j) {
    const acc_t* g_row = grad + (p0 + j) * rows;
    const acc_t* y_row = y + (p0 + j) * rows;
    for (int r = 0; r < rows; ++r) gs[r * L + j] = g_row[r];
    for (int r = 0; r < rows; ++r) ys[r * L + j] = y_row[r];
  }
  for (int g = 0; g < group; ++g) {
    const int base = g * points * L;
    V dot{};
    for (int p = 0; p < points; ++p) dot += load<L, acc_t>(gs + base + p * L) * load<L, acc_t>(ys + base + p * L);
    for (int p = 0; p < points; ++p) {
      const int at = base + p * L;
      const V v = load<L, acc_t>(ys + at) * (load<L, acc_t>(gs + at) - dot);
      acc_t* dst = grad_logits + (g * points + p) * pixels + p0;
      if (live == L) {
        store<L>(dst, v);
      } else {
        for (int j = 0; j < live; ++j) dst[j] = v[j];
      }
    }
  }
}

// Tasks are tiles of kTile pixels, a multiple of every variant's lane count, so that only the
// last block of the last tile is partial.
constexpr int64_t kTile = 64;

// Runs f(first_tile, last_tile) over the tiles of `pixels`, ~32K values of `rows` per task.
template <typename F>
void for_tiles(int64_t pixels, int64_t rows, const F& f) {
  parallel_chunks((pixels + kTile - 1) / kTile, std::max<int64_t>(1, 32768 / (rows * kTile)), f);
}

template <int L, typename in_t, typename acc_t>
DCNV3_INLINE void forward_range(const in_t* logits, acc_t* out, int64_t pixels, int group, int points,
                                int64_t begin, int64_t end) {
  std::vector<acc_t> scratch(static_cast<size_t>(group) * points * L);
  for (int64_t p0 = begin * kTile; p0 < std::min(pixels, end * kTile); p0 += L) {
    forward_block<L, in_t, acc_t>(logits, out, pixels, group, points, p0,
                            static_cast<int>(std::min<int64_t>(L, pixels - p0)), scratch.data());
  }
}

template <int L, typename acc_t>
DCNV3_INLINE void backward_range(const acc_t* grad, const acc_t* y, acc_t* grad_logits, int64_t pixels,
                                 int group, int points, int64_t begin, int64_t end) {
  std::vector<acc_t> scratch(2 * static_cast<size_t>(group) * points * L);
  for (int64_t p0 = begin * kTile; p0 < std::min(pixels, end * kTile); p0 += L) {
    backward_block<L, acc_t>(grad, y, grad_logits, pixels, group, points, p0,
                             static_cast<int>(std::min<int64_t>(L, pixels - p0)), scratch.data());
  }
}

#define DCNV3_MASK_VARIANT(NAME, TARGET, BYTES)                                                        \
  template <typename in_t, typename acc_t>                                                            \
  __attribute__((flatten)) TARGET void forward_##NAME(const in_t* l, acc_t* o, int64_t pixels, \
                                                               int group, int points, int64_t b,     \
                                                               int64_t e) {                          \
    forward_range<kWide<acc_t, BYTES>, in_t, acc_t>(l, o, pixels, group, points, b, e);               \
  }                                                                                                   \
  template <typename acc_t>                                                                           \
  __attribute__((flatten)) TARGET void backward_##NAME(const acc_t* g, const acc_t* y,       \
                                                                acc_t* gl, int64_t pixels, int group, \
                                                                int points, int64_t b, int64_t e) {   \
    backward_range<kWide<acc_t, BYTES>, acc_t>(g, y, gl, pixels, group, points, b, e);                \
  }
DCNV3_FOR_EACH_ISA(DCNV3_MASK_VARIANT)
#undef DCNV3_MASK_VARIANT

void check_group(const char* op, int64_t rows, int64_t group) {
  TORCH_CHECK(group >= 1 && rows % group == 0, op, ": group must be >= 1 and divide the ", rows,
              " mask rows (group * points), got ", group);
}

at::Tensor mask_softmax_cpu(const at::Tensor& logits, int64_t group) {
  TORCH_CHECK(logits.dim() == 2, "mask_softmax: logits must be (group * points, pixels), got shape ",
              logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16,
              "mask_softmax: logits must be float32, float64 or bfloat16, got ", dtype);
  const int64_t rows = logits.size(0), pixels = logits.size(1);
  check_group("mask_softmax", rows, group);
  const at::Tensor l = logits.contiguous();
  at::Tensor out = at::empty({pixels, rows}, l.options().dtype(at::toOpMathType(dtype)));  // bfloat16 -> float32
  const int points = static_cast<int>(rows / group);
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "mask_softmax_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* lp = l.const_data_ptr<scalar_t>();
    acc_t* op = out.mutable_data_ptr<acc_t>();
    for_tiles(pixels, rows, [&](int64_t b, int64_t e) {
      DCNV3_CALL_ISA(isa, forward, , lp, op, pixels, static_cast<int>(group), points, b, e);
    });
  });
  return out;
}

at::Tensor mask_softmax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output, int64_t group) {
  TORCH_CHECK(output.dim() == 2 && (output.scalar_type() == at::kFloat || output.scalar_type() == at::kDouble),
              "mask_softmax_backward: output must be a float32 or float64 (pixels, group * points) "
              "tensor, got shape ", output.sizes(), " dtype ", output.scalar_type());
  TORCH_CHECK(grad_output.sizes() == output.sizes() && grad_output.scalar_type() == output.scalar_type(),
              "mask_softmax_backward: grad_output must match the output (shape ", output.sizes(), ", dtype ",
              output.scalar_type(), "), got shape ", grad_output.sizes(), " dtype ", grad_output.scalar_type());
  const int64_t pixels = output.size(0), rows = output.size(1);
  check_group("mask_softmax_backward", rows, group);
  const at::Tensor g = grad_output.contiguous(), y = output.contiguous();
  at::Tensor grad_logits = at::empty({rows, pixels}, y.options());
  const int points = static_cast<int>(rows / group);
  const Isa isa = active_isa(Isa::kAvx512);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "mask_softmax_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* glp = grad_logits.mutable_data_ptr<scalar_t>();
    for_tiles(pixels, rows, [&](int64_t b, int64_t e) {
      DCNV3_CALL_ISA(isa, backward, <scalar_t>, gp, yp, glp, pixels, static_cast<int>(group), points, b, e);
    });
  });
  return grad_logits;
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("mask_softmax", &dcnv3::mask_softmax_cpu);
  m.impl("mask_softmax_backward", &dcnv3::mask_softmax_backward_cpu);
}
