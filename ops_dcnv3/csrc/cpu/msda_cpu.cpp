// CPU kernels of ops_dcnv3::msda (multi-scale deformable attention): float64, float32 and
// bfloat16 (accumulating in float32); float16 runs through float32 copies.
//
// Forward: parallel over (batch, query) pairs, each writing its own heads * head_dim outputs.
// Backward: parallel over (batch, head) pairs. A pair's writes (grad_value[b, :, h, :] and the
// location/attention gradients of its points) belong to it alone: no atomics, and the
// result is deterministic.
//
// Per point, the corner geometry comes from msda_sampling.h (the bilinear arithmetic shared
// with DCNv3); the inner loops run over head_dim with GCC vector types, compiled for
// baseline x86-64, AVX2+FMA and AVX-512 and picked at run time like DCNv3's
// (DCNV3_CPU_ISA). A corner outside the level reads a row of zeros and writes into a
// scratch row, so the loops have no branches and a NaN in value counts exactly where
// grid_sample reads it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../msda.h"
#include "cpu_vec.h"

namespace dcnv3 {
namespace msda {
namespace {

template <typename scalar_t>
struct Args {
  const scalar_t* value;
  const int64_t* spatial_shapes;     // (levels, 2): H, W
  const int64_t* level_start_index;  // (levels,)
  const scalar_t* sampling_locations;
  const scalar_t* attention_weights;
  Sizes s;
  // forward
  scalar_t* output;
  // backward
  const scalar_t* grad_output;
  at::opmath_type<scalar_t>* grad_value;
  scalar_t* grad_sampling_locations;
  scalar_t* grad_attention_weights;
};

// Per-thread scratch: the corners of one (query, head)'s points, and rows that stand in for
// corners outside their level.
template <typename scalar_t>
struct Scratch {
  using acc_t = at::opmath_type<scalar_t>;
  explicit Scratch(const Sizes& s)
      : corner(4 * s.levels * s.points), weight(4 * s.levels * s.points),
        zeros(s.head_dim, scalar_t(0)), sink(s.head_dim), go(s.head_dim), acc(s.head_dim) {}
  std::vector<const scalar_t*> corner;  // entry e = point * 4 + k
  std::vector<acc_t> weight;            // bilinear weight * attention weight (forward)
  std::vector<scalar_t> zeros;          // read by corners outside the level
  std::vector<acc_t> sink;              // written by corners outside the level (backward)
  std::vector<acc_t> go;                // one head's grad_output in acc_t
  std::vector<acc_t> acc;               // one head's output in acc_t
};

// out[c..] += sum over entries e of weight[e] * corner[e][c..], for R vectors of N lanes;
// R independent accumulators keep the FMA pipeline full.
template <int N, int R, typename scalar_t, typename acc_t>
DCNV3_INLINE void gather_block(const scalar_t* const* corner, const acc_t* weight, int entries, int c,
                               acc_t* out) {
  Vec<acc_t, N> acc[R] = {};
  for (int e = 0; e < entries; ++e) {
    const acc_t w = weight[e];
    const scalar_t* src = corner[e] + c;
    for (int r = 0; r < R; ++r) acc[r] += w * load<N, acc_t>(src + r * N);
  }
  for (int r = 0; r < R; ++r) store<N>(out + c + r * N, acc[r]);
}

template <int N, typename scalar_t, typename acc_t>
DCNV3_INLINE void gather_channels(const scalar_t* const* corner, const acc_t* weight, int entries,
                                  int& c, int head_dim, acc_t* out) {
  for (; c + 4 * N <= head_dim; c += 4 * N) gather_block<N, 4>(corner, weight, entries, c, out);
  if (c + 2 * N <= head_dim) {
    gather_block<N, 2>(corner, weight, entries, c, out);
    c += 2 * N;
  }
  if (c + N <= head_dim) {
    gather_block<N, 1>(corner, weight, entries, c, out);
    c += N;
  }
}

template <typename scalar_t, int kBytes>
DCNV3_INLINE void forward_range(const Args<scalar_t>& a, int64_t begin, int64_t end,
                                Scratch<scalar_t>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  const Sizes& s = a.s;
  const int head_dim = static_cast<int>(s.head_dim);
  const int64_t key_stride = s.heads * s.head_dim;  // between neighbouring keys of one head
  const int entries = static_cast<int>(4 * s.levels * s.points);
  const scalar_t** corner = scratch.corner.data();
  acc_t* weight = scratch.weight.data();
  acc_t* acc = scratch.acc.data();
  for (int64_t index = begin; index < end; ++index) {  // index = b * queries + q
    const int64_t b = index / s.queries;
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t point0 = (index * s.heads + h) * s.levels * s.points;
      const scalar_t* loc = a.sampling_locations + 2 * point0;
      const scalar_t* attention = a.attention_weights + point0;
      bool finite = true;
      int e = 0;
      for (int64_t l = 0; l < s.levels; ++l) {
        const int height = static_cast<int>(a.spatial_shapes[2 * l]);
        const int width = static_cast<int>(a.spatial_shapes[2 * l + 1]);
        const scalar_t* level = a.value + ((b * s.keys + a.level_start_index[l]) * s.heads + h) * s.head_dim;
        for (int64_t p = 0; p < s.points; ++p, loc += 2, ++attention) {
          Bilinear<acc_t> bl;
          finite &= sample_location(static_cast<acc_t>(loc[0]), static_cast<acc_t>(loc[1]), height, width, bl);
          const acc_t w = static_cast<acc_t>(*attention);
          for (int k = 0; k < 4; ++k, ++e) {
            corner[e] = bl.valid[k] ? level + int64_t(corner_pixel(bl, k, width)) * key_stride
                                    : scratch.zeros.data();
            weight[e] = bl.weight[k] * w;
          }
        }
      }
      int c = 0;
      gather_channels<wide>(corner, weight, entries, c, head_dim, acc);
      if constexpr (narrow >= 2) {
        if (c + narrow <= head_dim) {
          gather_block<narrow, 1>(corner, weight, entries, c, acc);
          c += narrow;
        }
      }
      for (; c < head_dim; ++c) {
        acc_t sum = 0;
        for (int i = 0; i < entries; ++i) sum += weight[i] * static_cast<acc_t>(corner[i][c]);
        acc[c] = sum;
      }
      scalar_t* out = a.output + (index * s.heads + h) * s.head_dim;
      if (finite) {
        for (int i = 0; i < head_dim; ++i) out[i] = static_cast<scalar_t>(acc[i]);
      } else {  // grid_sample: a non-finite location makes the sample, and so the sum, NaN
        for (int i = 0; i < head_dim; ++i) out[i] = std::numeric_limits<scalar_t>::quiet_NaN();
      }
    }
  }
}

template <typename scalar_t, int kBytes>
DCNV3_INLINE void backward_range(const Args<scalar_t>& a, int64_t begin, int64_t end,
                                 Scratch<scalar_t>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  const Sizes& s = a.s;
  const int head_dim = static_cast<int>(s.head_dim);
  const int64_t key_stride = s.heads * s.head_dim;
  acc_t* go = scratch.go.data();
  for (int64_t task = begin; task < end; ++task) {  // task = b * heads + h
    const int64_t b = task / s.heads, h = task % s.heads;
    for (int64_t q = 0; q < s.queries; ++q) {
      const int64_t bq = b * s.queries + q;
      const scalar_t* gout = a.grad_output + (bq * s.heads + h) * s.head_dim;
      for (int c = 0; c < head_dim; ++c) go[c] = static_cast<acc_t>(gout[c]);
      const int64_t point0 = (bq * s.heads + h) * s.levels * s.points;
      for (int64_t l = 0; l < s.levels; ++l) {
        const int height = static_cast<int>(a.spatial_shapes[2 * l]);
        const int width = static_cast<int>(a.spatial_shapes[2 * l + 1]);
        const int64_t level_offset = ((b * s.keys + a.level_start_index[l]) * s.heads + h) * s.head_dim;
        for (int64_t p = 0; p < s.points; ++p) {
          const int64_t point = point0 + l * s.points + p;
          const scalar_t* loc = a.sampling_locations + 2 * point;
          Bilinear<acc_t> bl;
          const bool finite =
              sample_location(static_cast<acc_t>(loc[0]), static_cast<acc_t>(loc[1]), height, width, bl);
          const acc_t attention = static_cast<acc_t>(a.attention_weights[point]);
          const scalar_t* src[4];
          acc_t* dst[4];
          acc_t mw[4];
          for (int k = 0; k < 4; ++k) {
            const int64_t offset = level_offset + int64_t(corner_pixel(bl, k, width)) * key_stride;
            src[k] = bl.valid[k] ? a.value + offset : scratch.zeros.data();
            dst[k] = bl.valid[k] ? a.grad_value + offset : scratch.sink.data();
            mw[k] = attention * bl.weight[k];
          }
          int c = 0;
          Vec<acc_t, wide> prod[4] = {};
          scatter_and_products<wide>(go, src, dst, mw, c, head_dim, prod);
          acc_t d[4];
          for (int k = 0; k < 4; ++k) d[k] = horizontal_sum<wide, acc_t>(prod[k]);
          if constexpr (narrow >= 2) {
            Vec<acc_t, narrow> prod_narrow[4] = {};
            scatter_and_products<narrow>(go, src, dst, mw, c, head_dim, prod_narrow);
            for (int k = 0; k < 4; ++k) d[k] += horizontal_sum<narrow, acc_t>(prod_narrow[k]);
          }
          for (; c < head_dim; ++c) {
            for (int k = 0; k < 4; ++k) {
              d[k] += go[c] * static_cast<acc_t>(src[k][c]);
              dst[k][c] += mw[k] * go[c];
            }
          }
          acc_t grad_x, grad_y, grad_attention;
          location_and_attention_grads(bl, d, attention, finite, height, width, grad_x, grad_y,
                                       grad_attention);
          a.grad_sampling_locations[2 * point] = static_cast<scalar_t>(grad_x);
          a.grad_sampling_locations[2 * point + 1] = static_cast<scalar_t>(grad_y);
          a.grad_attention_weights[point] = static_cast<scalar_t>(grad_attention);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- ISA variants
#if defined(__x86_64__) && defined(__GNUC__)
#define MSDA_ISA_VARIANT(NAME, TARGET, BYTES)                                                   \
  template <typename scalar_t>                                                              \
  __attribute__((target(TARGET), flatten)) void forward_##NAME(                             \
      const Args<scalar_t>& a, int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {    \
    forward_range<scalar_t, BYTES>(a, begin, end, scratch);                                 \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  __attribute__((target(TARGET), flatten)) void backward_##NAME(                            \
      const Args<scalar_t>& a, int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {    \
    backward_range<scalar_t, BYTES>(a, begin, end, scratch);                                \
  }
MSDA_ISA_VARIANT(avx2, "avx2,fma", 32)
MSDA_ISA_VARIANT(avx512, "avx512f,avx512bw,avx512vl,avx2,fma", 64)
#undef MSDA_ISA_VARIANT
#endif

template <typename scalar_t>
__attribute__((flatten)) void forward_default(const Args<scalar_t>& a, int64_t begin, int64_t end,
                                              Scratch<scalar_t>& scratch) {
  forward_range<scalar_t, 16>(a, begin, end, scratch);
}

template <typename scalar_t>
__attribute__((flatten)) void backward_default(const Args<scalar_t>& a, int64_t begin, int64_t end,
                                               Scratch<scalar_t>& scratch) {
  backward_range<scalar_t, 16>(a, begin, end, scratch);
}

template <typename scalar_t>
void run(const Args<scalar_t>& a, bool backward) {
  const Isa isa = active_isa();
  const int64_t tasks = backward ? a.s.batch * a.s.heads : a.s.batch * a.s.queries;
  at::parallel_for(0, tasks, backward ? 1 : 16, [&](int64_t begin, int64_t end) {
    Scratch<scalar_t> scratch(a.s);
    switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
      case Isa::kAvx512:
        return backward ? backward_avx512(a, begin, end, scratch) : forward_avx512(a, begin, end, scratch);
      case Isa::kAvx2:
        return backward ? backward_avx2(a, begin, end, scratch) : forward_avx2(a, begin, end, scratch);
#endif
      default:
        return backward ? backward_default(a, begin, end, scratch) : forward_default(a, begin, end, scratch);
    }
  });
}

template <typename scalar_t>
Args<scalar_t> common_args(const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                           const at::Tensor& attention_weights, const Sizes& s) {
  Args<scalar_t> a{};
  a.value = value.const_data_ptr<scalar_t>();
  a.spatial_shapes = spatial_shapes.const_data_ptr<int64_t>();
  a.level_start_index = level_start_index.const_data_ptr<int64_t>();
  a.sampling_locations = sampling_locations.const_data_ptr<scalar_t>();
  a.attention_weights = attention_weights.const_data_ptr<scalar_t>();
  a.s = s;
  return a;
}

// ---------------------------------------------------------------- ATen entry points
at::Tensor msda_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                            const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                            const at::Tensor& attention_weights, int64_t im2col_step) {
  if (value.scalar_type() == at::kHalf) {  // no fast half path on CPU: go through float
    return msda_forward_cpu(value.to(at::kFloat), spatial_shapes, level_start_index,
                            sampling_locations.to(at::kFloat), attention_weights.to(at::kFloat), im2col_step)
        .to(at::kHalf);
  }
  ForwardCall call = prepare_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, call.value.scalar_type(), "msda_forward_cpu", [&] {
    Args<scalar_t> a = common_args<scalar_t>(call.value, call.spatial_shapes, call.level_start_index,
                                             call.sampling_locations, call.attention_weights, call.s);
    a.output = call.output.mutable_data_ptr<scalar_t>();
    run(a, false);
  });
  return call.output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> msda_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, int64_t im2col_step) {
  if (value.scalar_type() == at::kHalf) {
    auto [gv, gl, ga] = msda_backward_cpu(grad_output.to(at::kFloat), value.to(at::kFloat), spatial_shapes,
                                          level_start_index, sampling_locations.to(at::kFloat),
                                          attention_weights.to(at::kFloat), im2col_step);
    return {gv.to(at::kHalf), gl.to(at::kHalf), ga.to(at::kHalf)};
  }
  BackwardCall call = prepare_backward(grad_output, value, spatial_shapes, level_start_index,
                                       sampling_locations, attention_weights, im2col_step);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, call.value.scalar_type(), "msda_backward_cpu", [&] {
    Args<scalar_t> a = common_args<scalar_t>(call.value, call.spatial_shapes, call.level_start_index,
                                             call.sampling_locations, call.attention_weights, call.s);
    a.grad_output = call.grad_output.const_data_ptr<scalar_t>();
    a.grad_value = call.grad_value.mutable_data_ptr<at::opmath_type<scalar_t>>();
    a.grad_sampling_locations = call.grad_sampling_locations.mutable_data_ptr<scalar_t>();
    a.grad_attention_weights = call.grad_attention_weights.mutable_data_ptr<scalar_t>();
    run(a, true);
  });
  return call.gradients();
}

}  // namespace
}  // namespace msda
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("msda", &dcnv3::msda::msda_forward_cpu);
  m.impl("msda_backward", &dcnv3::msda::msda_backward_cpu);
}
