// CPU kernels of ops_dcnv3::dcnv3: float64, float32 and bfloat16 (accumulating in
// float32); float16 runs through float32 copies.
//
// Forward: parallel over output pixels, each writing its own C outputs.
// Backward: parallel over (image, group) pairs. Every write of a task (that image's
// grad_input channels of the group, and the group's offset/mask slots) belongs to the
// task alone: no atomics, and the result is deterministic.
//
// Inner loops run over a group's contiguous channels with GCC vector types. The
// per-range bodies are compiled three times (baseline x86-64, AVX2+FMA, AVX-512) and
// picked at run time; DCNV3_CPU_ISA=default|avx2|avx512 forces one (tests use it).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../dcnv3.h"

namespace dcnv3 {
namespace {

// ---------------------------------------------------------------- vector helpers
// GCC vector types cannot take a dependent size, hence one specialisation per use.
template <typename T, int N>
struct VecType;
#define DCNV3_VEC(T, N) \
  template <>           \
  struct VecType<T, N> { typedef T type __attribute__((vector_size(sizeof(T) * N))); };
DCNV3_VEC(float, 16)
DCNV3_VEC(float, 8)
DCNV3_VEC(double, 8)
DCNV3_VEC(double, 4)
DCNV3_VEC(uint16_t, 16)
DCNV3_VEC(uint16_t, 8)
DCNV3_VEC(uint32_t, 16)
DCNV3_VEC(uint32_t, 8)
#undef DCNV3_VEC
template <typename T, int N>
using Vec = typename VecType<T, N>::type;

// Loads N channels of scalar_t as a vector of acc_t.
template <int N, typename acc_t, typename scalar_t>
inline Vec<acc_t, N> load(const scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    Vec<uint16_t, N> bits;
    std::memcpy(&bits, p, sizeof(bits));
    const Vec<uint32_t, N> wide = __builtin_convertvector(bits, Vec<uint32_t, N>) << 16;
    Vec<float, N> v;
    std::memcpy(&v, &wide, sizeof(v));
    return v;
  } else {
    Vec<acc_t, N> v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
}

template <int N, typename acc_t>
inline void store(acc_t* p, Vec<acc_t, N> v) {
  std::memcpy(p, &v, sizeof(v));
}

template <int N, typename acc_t>
inline acc_t horizontal_sum(Vec<acc_t, N> v) {
  acc_t s = 0;
  for (int i = 0; i < N; ++i) s += v[i];
  return s;
}

// Widest vectors first (64 bytes), then 32 bytes, then scalars.
template <typename acc_t>
constexpr int kWide = 64 / sizeof(acc_t);
template <typename acc_t>
constexpr int kNarrow = 32 / sizeof(acc_t);

// ---------------------------------------------------------------- forward
template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* input;
  const scalar_t* offset;
  const scalar_t* mask;
  scalar_t* output;
  Geometry g;
  int64_t pixels;  // Ho * Wo
};

// out[c] = sum_t weight[t] * image[corner[t] + c] for c in [c0, c0 + N).
template <int N, typename scalar_t, typename acc_t>
inline void gather_chunk(const scalar_t* image, const int64_t* corner, const acc_t* weight,
                         int count, int c0, acc_t* out) {
  Vec<acc_t, N> acc = {};
  for (int t = 0; t < count; ++t) acc += weight[t] * load<N, acc_t>(image + corner[t] + c0);
  store<N>(out + c0, acc);
}

// Scratch: corner (4 * P int64), weight (4 * P acc_t), acc (C acc_t).
template <typename scalar_t>
inline __attribute__((always_inline)) void forward_range(const ForwardArgs<scalar_t>& a,
                                                         int64_t begin, int64_t end,
                                                         int64_t* corner,
                                                         at::opmath_type<scalar_t>* weight,
                                                         at::opmath_type<scalar_t>* acc) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g = a.g;
  const int gc = g.group_channels;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  for (int64_t index = begin; index < end; ++index) {
    const int64_t n = index / a.pixels;
    const int oy = static_cast<int>((index % a.pixels) / g.out_width);
    const int ox = static_cast<int>(index % g.out_width);
    const scalar_t* image = a.input + n * image_stride;
    const scalar_t* off = a.offset + index * g.group * g.points * 2;
    const scalar_t* msk = a.mask + index * g.group * g.points;
    for (int grp = 0; grp < g.group; ++grp) {
      // Geometry once per tap: the valid corners' pixel offsets and mask * weight.
      int count = 0, p = 0;
      for (int i = 0; i < g.kernel_w; ++i) {
        for (int j = 0; j < g.kernel_h; ++j) {
          if (is_removed_center(g, i, j)) continue;
          const int slot = grp * g.points + p++;
          acc_t y, x;
          tap_location<acc_t>(g, oy, ox, i, j, static_cast<acc_t>(off[2 * slot]),
                              static_cast<acc_t>(off[2 * slot + 1]), y, x);
          Bilinear<acc_t> b;
          if (!make_bilinear(y, x, g.height, g.width, b)) continue;
          const acc_t m = static_cast<acc_t>(msk[slot]);
          for (int k = 0; k < 4; ++k) {
            if (!b.valid[k]) continue;
            corner[count] = int64_t(corner_pixel(b, k, g.width)) * g.channels;
            weight[count++] = m * b.weight[k];
          }
        }
      }
      const scalar_t* image_g = image + grp * gc;
      acc_t* acc_g = acc + grp * gc;
      int c = 0;
      for (; c + kWide<acc_t> <= gc; c += kWide<acc_t>)
        gather_chunk<kWide<acc_t>>(image_g, corner, weight, count, c, acc_g);
      for (; c + kNarrow<acc_t> <= gc; c += kNarrow<acc_t>)
        gather_chunk<kNarrow<acc_t>>(image_g, corner, weight, count, c, acc_g);
      for (; c < gc; ++c) {
        acc_t s = 0;
        for (int t = 0; t < count; ++t) s += weight[t] * static_cast<acc_t>(image_g[corner[t] + c]);
        acc_g[c] = s;
      }
    }
    scalar_t* out = a.output + index * g.channels;
    for (int c = 0; c < g.channels; ++c) out[c] = static_cast<scalar_t>(acc[c]);
  }
}

// ---------------------------------------------------------------- backward
template <typename scalar_t>
struct BackwardArgs {
  const scalar_t* grad_output;
  const scalar_t* input;
  const scalar_t* offset;
  const scalar_t* mask;
  at::opmath_type<scalar_t>* grad_input;
  scalar_t* grad_offset;
  scalar_t* grad_mask;
  Geometry g;
  int64_t pixels;
};

// Returns <go, image[c0:c0+N]> and adds scale * go to grad_image[c0:c0+N].
template <int N, typename scalar_t, typename acc_t>
inline acc_t dot_and_scatter_chunk(const acc_t* go, const scalar_t* image, acc_t* grad_image,
                                   acc_t scale, int c0) {
  const Vec<acc_t, N> g = load<N, acc_t>(go + c0);
  const Vec<acc_t, N> x = load<N, acc_t>(image + c0);
  store<N>(grad_image + c0, load<N, acc_t>(grad_image + c0) + scale * g);
  return horizontal_sum<N, acc_t>(g * x);
}

template <typename scalar_t>
inline __attribute__((always_inline)) void backward_range(const BackwardArgs<scalar_t>& a,
                                                          int64_t begin, int64_t end,
                                                          at::opmath_type<scalar_t>* go) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g = a.g;
  const int gc = g.group_channels;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / g.group;
    const int grp = static_cast<int>(task % g.group);
    const scalar_t* image_g = a.input + n * image_stride + grp * gc;
    acc_t* grad_image_g = a.grad_input + n * image_stride + grp * gc;
    for (int64_t pix = 0; pix < a.pixels; ++pix) {
      const int64_t index = n * a.pixels + pix;
      const int oy = static_cast<int>(pix / g.out_width);
      const int ox = static_cast<int>(pix % g.out_width);
      const scalar_t* gout = a.grad_output + index * g.channels + grp * gc;
      for (int c = 0; c < gc; ++c) go[c] = static_cast<acc_t>(gout[c]);
      const int64_t slot0 = (index * g.group + grp) * g.points;
      int p = 0;
      for (int i = 0; i < g.kernel_w; ++i) {
        for (int j = 0; j < g.kernel_h; ++j) {
          if (is_removed_center(g, i, j)) continue;
          const int64_t slot = slot0 + p++;
          acc_t y, x;
          tap_location<acc_t>(g, oy, ox, i, j, static_cast<acc_t>(a.offset[2 * slot]),
                              static_cast<acc_t>(a.offset[2 * slot + 1]), y, x);
          Bilinear<acc_t> b;
          if (!make_bilinear(y, x, g.height, g.width, b)) {
            a.grad_offset[2 * slot] = a.grad_offset[2 * slot + 1] = scalar_t(0);
            a.grad_mask[slot] = scalar_t(0);
            continue;
          }
          const acc_t m = static_cast<acc_t>(a.mask[slot]);
          acc_t d[4] = {0, 0, 0, 0};
          for (int k = 0; k < 4; ++k) {
            if (!b.valid[k]) continue;
            const int64_t pixel = int64_t(corner_pixel(b, k, g.width)) * g.channels;
            const scalar_t* src = image_g + pixel;
            acc_t* dst = grad_image_g + pixel;
            const acc_t mw = m * b.weight[k];
            acc_t s = 0;
            int c = 0;
            for (; c + kWide<acc_t> <= gc; c += kWide<acc_t>)
              s += dot_and_scatter_chunk<kWide<acc_t>>(go, src, dst, mw, c);
            for (; c + kNarrow<acc_t> <= gc; c += kNarrow<acc_t>)
              s += dot_and_scatter_chunk<kNarrow<acc_t>>(go, src, dst, mw, c);
            for (; c < gc; ++c) {
              s += go[c] * static_cast<acc_t>(src[c]);
              dst[c] += mw * go[c];
            }
            d[k] = s;
          }
          acc_t grad_y, grad_x, grad_m;
          location_and_mask_grads(b, d, m, grad_y, grad_x, grad_m);
          a.grad_offset[2 * slot] = static_cast<scalar_t>(grad_x * scale);
          a.grad_offset[2 * slot + 1] = static_cast<scalar_t>(grad_y * scale);
          a.grad_mask[slot] = static_cast<scalar_t>(grad_m);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- ISA variants
enum class Isa { kDefault, kAvx2, kAvx512 };

#if defined(__x86_64__) && defined(__GNUC__)
#define DCNV3_ISA_VARIANT(NAME, TARGET)                                                       \
  template <typename scalar_t>                                                                \
  __attribute__((target(TARGET), flatten)) void forward_##NAME(                               \
      const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end, int64_t* corner,            \
      at::opmath_type<scalar_t>* weight, at::opmath_type<scalar_t>* acc) {                    \
    forward_range(a, begin, end, corner, weight, acc);                                        \
  }                                                                                           \
  template <typename scalar_t>                                                                \
  __attribute__((target(TARGET), flatten)) void backward_##NAME(                              \
      const BackwardArgs<scalar_t>& a, int64_t begin, int64_t end,                            \
      at::opmath_type<scalar_t>* go) {                                                        \
    backward_range(a, begin, end, go);                                                        \
  }
DCNV3_ISA_VARIANT(avx2, "avx2,fma")
DCNV3_ISA_VARIANT(avx512, "avx512f,avx512bw,avx512vl,avx2,fma")
#undef DCNV3_ISA_VARIANT

Isa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kDefault;
}
#else
Isa detect_isa() { return Isa::kDefault; }
#endif

template <typename scalar_t>
__attribute__((flatten)) void forward_default(const ForwardArgs<scalar_t>& a, int64_t begin,
                                              int64_t end, int64_t* corner,
                                              at::opmath_type<scalar_t>* weight,
                                              at::opmath_type<scalar_t>* acc) {
  forward_range(a, begin, end, corner, weight, acc);
}

template <typename scalar_t>
__attribute__((flatten)) void backward_default(const BackwardArgs<scalar_t>& a, int64_t begin,
                                               int64_t end, at::opmath_type<scalar_t>* go) {
  backward_range(a, begin, end, go);
}

// The best ISA of this CPU, or the one DCNV3_CPU_ISA names (never one the CPU lacks).
Isa active_isa() {
  static const Isa best = detect_isa();
  const char* forced = std::getenv("DCNV3_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return best;
  const std::string name(forced);
  Isa want;
  if (name == "default") want = Isa::kDefault;
  else if (name == "avx2") want = Isa::kAvx2;
  else if (name == "avx512") want = Isa::kAvx512;
  else TORCH_CHECK(false, "DCNV3_CPU_ISA must be default, avx2 or avx512, got '", name, "'");
  TORCH_CHECK(static_cast<int>(want) <= static_cast<int>(best), "DCNV3_CPU_ISA=", name,
              " is not supported by this CPU");
  return want;
}

template <typename scalar_t>
void run_forward(const ForwardArgs<scalar_t>& a, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const Isa isa = active_isa();
  at::parallel_for(0, total, 16, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> corner(4 * a.g.points);
    std::vector<acc_t> weight(4 * a.g.points), acc(a.g.channels);
    switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
      case Isa::kAvx512:
        return forward_avx512(a, begin, end, corner.data(), weight.data(), acc.data());
      case Isa::kAvx2:
        return forward_avx2(a, begin, end, corner.data(), weight.data(), acc.data());
#endif
      default:
        return forward_default(a, begin, end, corner.data(), weight.data(), acc.data());
    }
  });
}

template <typename scalar_t>
void run_backward(const BackwardArgs<scalar_t>& a, int64_t tasks) {
  using acc_t = at::opmath_type<scalar_t>;
  const Isa isa = active_isa();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> go(a.g.group_channels);
    switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
      case Isa::kAvx512:
        return backward_avx512(a, begin, end, go.data());
      case Isa::kAvx2:
        return backward_avx2(a, begin, end, go.data());
#endif
      default:
        return backward_default(a, begin, end, go.data());
    }
  });
}

// ---------------------------------------------------------------- ATen entry points
at::Tensor dcnv3_forward_cpu(const at::Tensor& input_, const at::Tensor& offset_,
                             const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h,
                             int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                             int64_t group, int64_t group_channels, double offset_scale,
                             int64_t im2col_step, bool remove_center) {
  const Geometry g = make_geometry(input_, offset_, mask_, DCNV3_GEOMETRY_ARGS);
  if (input_.scalar_type() == at::kHalf) {  // no fast half path on CPU: go through float
    return dcnv3_forward_cpu(input_.to(at::kFloat), offset_.to(at::kFloat), mask_.to(at::kFloat),
                             DCNV3_GEOMETRY_ARGS)
        .to(at::kHalf);
  }
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(),
                   mask = mask_.contiguous();
  const int64_t batch = input.size(0);
  at::Tensor output =
      at::empty({batch, g.out_height, g.out_width, g.channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "dcnv3_forward_cpu", [&] {
    const ForwardArgs<scalar_t> args{input.const_data_ptr<scalar_t>(),
                                     offset.const_data_ptr<scalar_t>(),
                                     mask.const_data_ptr<scalar_t>(),
                                     output.mutable_data_ptr<scalar_t>(), g,
                                     int64_t(g.out_height) * g.out_width};
    run_forward(args, batch * args.pixels);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_,
    const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale, int64_t im2col_step,
    bool remove_center) {
  const Geometry g = make_geometry(input_, offset_, mask_, DCNV3_GEOMETRY_ARGS);
  const int64_t batch = input_.size(0);
  TORCH_CHECK(grad_output_.sizes() ==
                  at::IntArrayRef({batch, g.out_height, g.out_width, g.channels}),
              "dcnv3_backward: grad_output has shape ", grad_output_.sizes());
  if (input_.scalar_type() == at::kHalf) {
    auto [gi, go, gm] = dcnv3_backward_cpu(
        grad_output_.to(at::kFloat), input_.to(at::kFloat), offset_.to(at::kFloat),
        mask_.to(at::kFloat), DCNV3_GEOMETRY_ARGS);
    return {gi.to(at::kHalf), go.to(at::kHalf), gm.to(at::kHalf)};
  }
  const at::Tensor grad_output = grad_output_.to(input_.scalar_type()).contiguous();
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(),
                   mask = mask_.contiguous();
  const auto acc_dtype = at::toOpMathType(input.scalar_type());
  at::Tensor grad_input = at::zeros(input.sizes(), input.options().dtype(acc_dtype));
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = at::empty_like(mask);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "dcnv3_backward_cpu", [&] {
    const BackwardArgs<scalar_t> args{
        grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
        offset.const_data_ptr<scalar_t>(), mask.const_data_ptr<scalar_t>(),
        grad_input.mutable_data_ptr<at::opmath_type<scalar_t>>(),
        grad_offset.mutable_data_ptr<scalar_t>(), grad_mask.mutable_data_ptr<scalar_t>(), g,
        int64_t(g.out_height) * g.out_width};
    run_backward(args, batch * g.group);
  });
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3", &dcnv3::dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3::dcnv3_backward_cpu);
}
