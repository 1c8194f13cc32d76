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

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../dcnv3.h"

namespace dcnv3 {
namespace {

// Helpers are forced inline so that each ISA variant below compiles its own copy.
#define DCNV3_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------- vector helpers
// GCC vector types cannot take a dependent size, hence one specialisation per use.
template <typename T, int N>
struct VecType;
#define DCNV3_VEC(T, N) \
  template <>           \
  struct VecType<T, N> { typedef T type __attribute__((vector_size(sizeof(T) * N))); };
DCNV3_VEC(float, 16)
DCNV3_VEC(float, 8)
DCNV3_VEC(float, 4)
DCNV3_VEC(float, 2)
DCNV3_VEC(double, 16)
DCNV3_VEC(double, 8)
DCNV3_VEC(double, 4)
DCNV3_VEC(double, 2)
DCNV3_VEC(uint16_t, 16)
DCNV3_VEC(uint16_t, 8)
DCNV3_VEC(uint16_t, 4)
DCNV3_VEC(uint16_t, 2)
DCNV3_VEC(uint32_t, 16)
DCNV3_VEC(uint32_t, 8)
DCNV3_VEC(uint32_t, 4)
DCNV3_VEC(uint32_t, 2)
#undef DCNV3_VEC
template <typename T, int N>
using Vec = typename VecType<T, N>::type;

// Loads N channels of scalar_t as a vector of acc_t.
template <int N, typename acc_t, typename scalar_t>
DCNV3_INLINE Vec<acc_t, N> load(const scalar_t* p) {
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
DCNV3_INLINE void store(acc_t* p, Vec<acc_t, N> v) {
  std::memcpy(p, &v, sizeof(v));
}

// Pairwise (tree) reduction: log2(N) shuffle+add steps instead of an N-long chain.
template <int N, typename acc_t>
DCNV3_INLINE acc_t horizontal_sum(Vec<acc_t, N> v) {
  if constexpr (N == 2) {
    return v[0] + v[1];
  } else {
    Vec<acc_t, N / 2> low, high;
    std::memcpy(&low, &v, sizeof(low));
    std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof(low), sizeof(high));
    return horizontal_sum<N / 2, acc_t>(low + high);
  }
}

// Channel loops use the ISA's native vector width (kBytes: 16 SSE2, 32 AVX2, 64
// AVX-512; wider generic vectors make GCC spill), then half of it, then scalars.
template <typename acc_t, int kBytes>
constexpr int kWide = kBytes / sizeof(acc_t);
template <typename acc_t, int kBytes>
constexpr int kNarrow = kWide<acc_t, kBytes> / 2;

// ---------------------------------------------------------------- sampling geometry
// Structure-of-arrays geometry of up to `capacity` consecutive (group, point) entries of
// one output pixel; corner k of entry e sits at [k * capacity + e]. Invalid corners
// point at pixel 0 with weight 0 and valid 0, so the gather loops need no branches.
template <typename acc_t>
struct Samples {
  explicit Samples(int capacity)
      : capacity(capacity), pixel(4 * capacity), weight(4 * capacity), valid(4 * capacity),
        ly(capacity), lx(capacity) {}
  int capacity;
  std::vector<int32_t> pixel;
  std::vector<acc_t> weight, valid, ly, lx;
};

// Regular-grid displacement of entry e = group * P + point, for every group (per call).
template <typename acc_t>
struct TapTable {
  explicit TapTable(const Geometry& g) {
    for (int grp = 0; grp < g.group; ++grp)
      for (int i = 0; i < g.kernel_w; ++i)
        for (int j = 0; j < g.kernel_h; ++j) {
          if (is_removed_center(g, i, j)) continue;
          dx.push_back(acc_t(tap_dx(g, i)));
          dy.push_back(acc_t(tap_dy(g, j)));
        }
  }
  std::vector<acc_t> dx, dy;
};

// Geometry of `count` entries starting at `first` for output pixel (oy, ox); `offset`
// points at that pixel's first offset pair. A loop without branches: it vectorises.
template <typename scalar_t, typename acc_t>
DCNV3_INLINE void compute_samples(const Geometry& g, int oy, int ox, const scalar_t* __restrict offset,
                            const TapTable<acc_t>& taps, int first, int count, Samples<acc_t>& s) {
  const acc_t cx = acc_t(centre_x(g, ox)), cy = acc_t(centre_y(g, oy));
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  const acc_t* __restrict base_x = taps.dx.data() + first;
  const acc_t* __restrict base_y = taps.dy.data() + first;
  const int cap = s.capacity;
  int32_t* __restrict pixel = s.pixel.data();
  acc_t* __restrict weight = s.weight.data();
  acc_t* __restrict valid = s.valid.data();
  acc_t* __restrict ly = s.ly.data();
  acc_t* __restrict lx = s.lx.data();
  for (int e = 0; e < count; ++e) {
    const acc_t x = sample_coordinate(cx, base_x[e], static_cast<acc_t>(offset[2 * e]), scale);
    const acc_t y = sample_coordinate(cy, base_y[e], static_cast<acc_t>(offset[2 * e + 1]), scale);
    Bilinear<acc_t> b;
    bilinear(y, x, g.height, g.width, b);
    const int32_t p0 = b.y0 * g.width + b.x0;
    const int32_t corner[4] = {p0, p0 + 1, p0 + g.width, p0 + g.width + 1};
    for (int k = 0; k < 4; ++k) {
      pixel[k * cap + e] = b.valid[k] ? corner[k] : 0;
      weight[k * cap + e] = b.weight[k];
      valid[k * cap + e] = b.valid[k] ? acc_t(1) : acc_t(0);
    }
    ly[e] = b.ly;
    lx[e] = b.lx;
  }
}

// ---------------------------------------------------------------- forward
template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* input;
  const scalar_t* offset;
  const scalar_t* mask;
  scalar_t* output;
  Geometry g;
  int64_t pixels;  // Ho * Wo
  const TapTable<at::opmath_type<scalar_t>>* taps;
};

// out[c0:c0+N] = sum_t weight[t] * image[corner[t] + c0 : ... + N].
template <int N, typename scalar_t, typename acc_t>
DCNV3_INLINE void gather_chunk(const scalar_t* image, const int64_t* corner, const acc_t* weight,
                         int count, int c0, acc_t* out) {
  Vec<acc_t, N> acc = {};
  for (int t = 0; t < count; ++t) acc += weight[t] * load<N, acc_t>(image + corner[t] + c0);
  store<N>(out + c0, acc);
}

// Per-thread scratch of the forward pass.
template <typename acc_t>
struct ForwardScratch {
  explicit ForwardScratch(const Geometry& g)
      : samples(g.group * g.points), corner(4 * g.points), weight(4 * g.points), acc(g.channels) {}
  Samples<acc_t> samples;
  std::vector<int64_t> corner;  // one group's 4P terms: element offset of the corner pixel
  std::vector<acc_t> weight;    // and mask * bilinear weight
  std::vector<acc_t> acc;       // one output pixel
};

template <typename scalar_t, int kBytes>
DCNV3_INLINE void forward_range(
    const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end,
    ForwardScratch<at::opmath_type<scalar_t>>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g = a.g;
  const int gc = g.group_channels, P = g.points;
  const int entries = g.group * P;
  const int cap = scratch.samples.capacity;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  int64_t* corner = scratch.corner.data();
  acc_t* weight = scratch.weight.data();
  acc_t* acc = scratch.acc.data();
  for (int64_t index = begin; index < end; ++index) {
    const int64_t n = index / a.pixels;
    const int oy = static_cast<int>((index % a.pixels) / g.out_width);
    const int ox = static_cast<int>(index % g.out_width);
    const scalar_t* image = a.input + n * image_stride;
    const scalar_t* msk = a.mask + index * entries;
    compute_samples(g, oy, ox, a.offset + index * entries * 2, *a.taps, 0, entries, scratch.samples);
    for (int grp = 0; grp < g.group; ++grp) {
      const int e0 = grp * P;
      for (int k = 0; k < 4; ++k) {
        for (int p = 0; p < P; ++p) {
          corner[k * P + p] = int64_t(scratch.samples.pixel[k * cap + e0 + p]) * g.channels;
          weight[k * P + p] = scratch.samples.weight[k * cap + e0 + p] * static_cast<acc_t>(msk[e0 + p]);
        }
      }
      const scalar_t* image_g = image + grp * gc;
      acc_t* acc_g = acc + grp * gc;
      constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
      int c = 0;
      for (; c + wide <= gc; c += wide) gather_chunk<wide>(image_g, corner, weight, 4 * P, c, acc_g);
      if constexpr (narrow >= 2) {
        for (; c + narrow <= gc; c += narrow)
          gather_chunk<narrow>(image_g, corner, weight, 4 * P, c, acc_g);
      }
      for (; c < gc; ++c) {
        acc_t s = 0;
        for (int t = 0; t < 4 * P; ++t) s += weight[t] * static_cast<acc_t>(image_g[corner[t] + c]);
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
  const TapTable<at::opmath_type<scalar_t>>* taps;
  int groups_per_task;  // a task is (image, block of groups_per_task groups)
};

// Returns <go, image[c0:c0+N]> and adds scale * go to grad_image[c0:c0+N].
template <int N, typename scalar_t, typename acc_t>
DCNV3_INLINE acc_t dot_and_scatter_chunk(const acc_t* go, const scalar_t* image, acc_t* grad_image,
                                   acc_t scale, int c0) {
  const Vec<acc_t, N> g = load<N, acc_t>(go + c0);
  const Vec<acc_t, N> x = load<N, acc_t>(image + c0);
  store<N>(grad_image + c0, load<N, acc_t>(grad_image + c0) + scale * g);
  return horizontal_sum<N, acc_t>(g * x);
}

template <typename acc_t>
struct BackwardScratch {
  BackwardScratch(const Geometry& g, int groups_per_task)
      : samples(groups_per_task * g.points), go(g.group_channels) {}
  Samples<acc_t> samples;
  std::vector<acc_t> go;  // one group's grad_output, in acc_t
};

template <typename scalar_t, int kBytes>
DCNV3_INLINE void backward_range(
    const BackwardArgs<scalar_t>& a, int64_t begin, int64_t end,
    BackwardScratch<at::opmath_type<scalar_t>>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g = a.g;
  const int gc = g.group_channels, P = g.points;
  const int cap = scratch.samples.capacity;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  const int blocks = (g.group + a.groups_per_task - 1) / a.groups_per_task;
  const Samples<acc_t>& s = scratch.samples;
  acc_t* go = scratch.go.data();
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / blocks;
    const int g_begin = static_cast<int>(task % blocks) * a.groups_per_task;
    const int g_end = std::min(g.group, g_begin + a.groups_per_task);
    for (int64_t pix = 0; pix < a.pixels; ++pix) {
      const int64_t index = n * a.pixels + pix;
      const int oy = static_cast<int>(pix / g.out_width);
      const int ox = static_cast<int>(pix % g.out_width);
      const int64_t slot_base = index * g.group * P;  // entry (grp, p) -> slot_base + grp*P + p
      compute_samples(g, oy, ox, a.offset + (slot_base + g_begin * P) * 2, *a.taps, g_begin * P,
                      (g_end - g_begin) * P, scratch.samples);
      for (int grp = g_begin; grp < g_end; ++grp) {
        const scalar_t* image_g = a.input + n * image_stride + grp * gc;
        acc_t* grad_image_g = a.grad_input + n * image_stride + grp * gc;
        const scalar_t* gout = a.grad_output + index * g.channels + grp * gc;
        for (int c = 0; c < gc; ++c) go[c] = static_cast<acc_t>(gout[c]);
        for (int p = 0; p < P; ++p) {
          const int e = (grp - g_begin) * P + p;
          const int64_t slot = slot_base + grp * P + p;
          const acc_t m = static_cast<acc_t>(a.mask[slot]);
          Bilinear<acc_t> b;
          b.ly = s.ly[e];
          b.lx = s.lx[e];
          acc_t d[4];
          for (int k = 0; k < 4; ++k) {
            b.weight[k] = s.weight[k * cap + e];
            d[k] = 0;
            if (s.valid[k * cap + e] == acc_t(0)) continue;
            const int64_t pixel = int64_t(s.pixel[k * cap + e]) * g.channels;
            const scalar_t* src = image_g + pixel;
            acc_t* dst = grad_image_g + pixel;
            const acc_t mw = m * b.weight[k];
            acc_t sum = 0;
            constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
            int c = 0;
            for (; c + wide <= gc; c += wide) sum += dot_and_scatter_chunk<wide>(go, src, dst, mw, c);
            if constexpr (narrow >= 2) {
              for (; c + narrow <= gc; c += narrow)
                sum += dot_and_scatter_chunk<narrow>(go, src, dst, mw, c);
            }
            for (; c < gc; ++c) {
              sum += go[c] * static_cast<acc_t>(src[c]);
              dst[c] += mw * go[c];
            }
            d[k] = sum;
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
#define DCNV3_ISA_VARIANT(NAME, TARGET, BYTES)                                                      \
  template <typename scalar_t>                                                                 \
  __attribute__((target(TARGET), flatten)) void forward_##NAME(                                \
      const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end,                              \
      ForwardScratch<at::opmath_type<scalar_t>>& scratch) {                                    \
    forward_range<scalar_t, BYTES>(a, begin, end, scratch);                                    \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  __attribute__((target(TARGET), flatten)) void backward_##NAME(                               \
      const BackwardArgs<scalar_t>& a, int64_t begin, int64_t end,                             \
      BackwardScratch<at::opmath_type<scalar_t>>& scratch) {                                   \
    backward_range<scalar_t, BYTES>(a, begin, end, scratch);                                   \
  }
DCNV3_ISA_VARIANT(avx2, "avx2,fma", 32)
DCNV3_ISA_VARIANT(avx512, "avx512f,avx512bw,avx512vl,avx2,fma", 64)
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
                                              int64_t end,
                                              ForwardScratch<at::opmath_type<scalar_t>>& scratch) {
  forward_range<scalar_t, 16>(a, begin, end, scratch);
}

template <typename scalar_t>
__attribute__((flatten)) void backward_default(const BackwardArgs<scalar_t>& a, int64_t begin,
                                               int64_t end,
                                               BackwardScratch<at::opmath_type<scalar_t>>& scratch) {
  backward_range<scalar_t, 16>(a, begin, end, scratch);
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
    ForwardScratch<acc_t> scratch(a.g);
    switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
      case Isa::kAvx512:
        return forward_avx512(a, begin, end, scratch);
      case Isa::kAvx2:
        return forward_avx2(a, begin, end, scratch);
#endif
      default:
        return forward_default(a, begin, end, scratch);
    }
  });
}

template <typename scalar_t>
void run_backward(const BackwardArgs<scalar_t>& a, int64_t tasks) {
  using acc_t = at::opmath_type<scalar_t>;
  const Isa isa = active_isa();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    BackwardScratch<acc_t> scratch(a.g, a.groups_per_task);
    switch (isa) {
#if defined(__x86_64__) && defined(__GNUC__)
      case Isa::kAvx512:
        return backward_avx512(a, begin, end, scratch);
      case Isa::kAvx2:
        return backward_avx2(a, begin, end, scratch);
#endif
      default:
        return backward_default(a, begin, end, scratch);
    }
  });
}

// Groups per backward task: whole images when the batch alone keeps every thread busy
// (geometry is then computed once per pixel), smaller blocks otherwise.
int groups_per_task(const Geometry& g, int64_t batch) {
  const int64_t wanted_tasks = 4 * int64_t(at::get_num_threads());
  const int64_t blocks = std::clamp<int64_t>((wanted_tasks + batch - 1) / std::max<int64_t>(batch, 1), 1, g.group);
  return static_cast<int>((g.group + blocks - 1) / blocks);
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
    const TapTable<at::opmath_type<scalar_t>> taps(g);
    const ForwardArgs<scalar_t> args{input.const_data_ptr<scalar_t>(),
                                     offset.const_data_ptr<scalar_t>(),
                                     mask.const_data_ptr<scalar_t>(),
                                     output.mutable_data_ptr<scalar_t>(), g,
                                     int64_t(g.out_height) * g.out_width, &taps};
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
    const TapTable<at::opmath_type<scalar_t>> taps(g);
    const BackwardArgs<scalar_t> args{
        grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
        offset.const_data_ptr<scalar_t>(), mask.const_data_ptr<scalar_t>(),
        grad_input.mutable_data_ptr<at::opmath_type<scalar_t>>(),
        grad_offset.mutable_data_ptr<scalar_t>(), grad_mask.mutable_data_ptr<scalar_t>(), g,
        int64_t(g.out_height) * g.out_width, &taps, groups_per_task(g, batch)};
    run_backward(args, batch * ((g.group + args.groups_per_task - 1) / args.groups_per_task));
  });
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3", &dcnv3::dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3::dcnv3_backward_cpu);
}
