// CPU kernels of ops_dcnv3::dcnv3: float64 and float32; bfloat16 and float16 run through
// float32 copies (a bfloat16 gather widens every load, two more instructions each: the
// kernel ran 1.4-1.5x slower in bfloat16 than in float32, the copies cost a few percent).
//
// Forward: parallel over output pixels, each writing its own C outputs.
// Backward: parallel over (image, block of groups) tasks. Every write of a task (that
// image's grad_input channels of the groups, and their offset/mask slots) belongs to the
// task alone: no atomics, and the result is deterministic. Both hand out their work in
// chunks to whichever thread is free (parallel_chunks in cpu_vec.h).
//
// Inner loops run over a group's contiguous channels with GCC vector types. The
// per-range bodies are compiled three times (baseline x86-64, AVX2+FMA, AVX-512) and
// picked at run time; DCNV3_CPU_ISA=default|avx2|avx512 forces one (tests use it).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../dcnv3.h"
#include "cpu_vec.h"

namespace dcnv3 {
namespace {

// ---------------------------------------------------------------- sampling geometry
// Structure-of-arrays geometry of up to `capacity` consecutive (group, point) entries of
// one output pixel; corner k of entry e sits at [k * capacity + e]. `element` is the
// corner's offset in the image (pixel * C; fits int32, numel < 2^31 is checked). Invalid
// corners point at a clamped in-image pixel with weight 0 and valid 0, so gather loops
// need no branches. The backward also keeps mask * weight (`masked`, 0 on invalid corners)
// and the fractions.
template <typename acc_t>
struct Samples {
  // Capacity rounds up to whole vectors (16 lanes at most): the last, partial block of
  // compute_samples writes full vectors into the padding.
  explicit Samples(int entries)
      : capacity((entries + 15) / 16 * 16), element(4 * capacity), weight(4 * capacity),
        valid(4 * capacity), masked(4 * capacity), ly(capacity), lx(capacity) {}
  int capacity;
  std::vector<int32_t> element;
  std::vector<acc_t> weight, valid, masked, ly, lx;
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
    dx.resize(dx.size() + 16);  // padding read by a partial last vector block
    dy.resize(dy.size() + 16);
  }
  std::vector<acc_t> dx, dy;
};

// Integer lanes matching acc_t lanes (what a vector comparison of acc_t yields).
template <typename acc_t>
using LaneInt = std::conditional_t<sizeof(acc_t) == 8, int64_t, int32_t>;

// Geometry of `count` entries starting at `first` for output pixel (oy, ox); `offset` and
// `mask` point at that pixel's first entry's offset pair and mask. With kForward the
// weights are multiplied by the mask and valid/masked/ly/lx are not needed.
//
// L entries at a time with explicit vectors: the arithmetic of bilinear() in
// dcnv3_sampling.h, written lane-wise because GCC does not auto-vectorise it. Invalid
// corners point at a clamped in-image pixel with weight 0. The last block may be
// partial: its inputs are staged zero-padded, its outputs land in the padding.
template <bool kForward, int L, typename acc_t>
DCNV3_INLINE void compute_samples(const Geometry& g, int oy, int ox, const acc_t* __restrict offset,
                                  const acc_t* __restrict mask, const TapTable<acc_t>& taps,
                                  int first, int count, Samples<acc_t>& s) {
  using VF = Vec<acc_t, L>;
  using VI = Vec<LaneInt<acc_t>, L>;
  const acc_t cx = acc_t(centre_x(g, ox)), cy = acc_t(centre_y(g, oy));
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  const acc_t* base_x = taps.dx.data() + first;
  const acc_t* base_y = taps.dy.data() + first;
  const int cap = s.capacity;
  const acc_t height = acc_t(g.height), width = acc_t(g.width);
  const LaneInt<acc_t> row = int64_t(g.width) * g.channels, channels = g.channels;
  const VI zero_i = VI{} + 0, h_last = VI{} + (g.height - 1), w_last = VI{} + (g.width - 1);
  acc_t staged_offset[2 * L], staged_mask[L];
  for (int e = 0; e < count; e += L) {
    const acc_t* off = offset + 2 * e;
    const acc_t* msk = mask + e;
    if (e + L > count) {
      const int live = count - e;
      std::fill_n(staged_offset, 2 * L, acc_t(0));
      std::fill_n(staged_mask, L, acc_t(0));
      std::copy_n(off, 2 * live, staged_offset);
      std::copy_n(msk, live, staged_mask);
      off = staged_offset;
      msk = staged_mask;
    }
    VF dx, dy;
    deinterleave<L, acc_t>(load<L, acc_t>(off), load<L, acc_t>(off + L), dx, dy);
    const VF m = load<L, acc_t>(msk);
    const VF x = cx + (load<L, acc_t>(base_x + e) + dx) * scale;
    const VF y = cy + (load<L, acc_t>(base_y + e) + dy) * scale;
    const VI inside = (y > acc_t(-1)) & (x > acc_t(-1)) & (y < height) & (x < width);
    VF ys = y > acc_t(-2) ? y : acc_t(-2), xs = x > acc_t(-2) ? x : acc_t(-2);
    ys = ys < height ? ys : height;
    xs = xs < width ? xs : width;
    // floor: truncate, then step down where truncation went up (negative values).
    VI y0 = __builtin_convertvector(ys, VI), x0 = __builtin_convertvector(xs, VI);
    y0 += __builtin_convertvector(y0, VF) > ys;  // comparison lanes are -1 / 0
    x0 += __builtin_convertvector(x0, VF) > xs;
    // Fractions from the unclamped location: NaN/inf exactly where the coordinate is
    // (the NaN/inf semantics of dcnv3_sampling.h); the usual ones inside the image.
    const VF ly = y - __builtin_convertvector(y0, VF), lx = x - __builtin_convertvector(x0, VF);
    const VF hy = acc_t(1) - ly, hx = acc_t(1) - lx;
    const VI top = inside & (y0 >= 0), bottom = inside & (y0 + 1 < g.height);
    const VI left = x0 >= 0, right = x0 + 1 < g.width;
    const VI valid[4] = {top & left, top & right, bottom & left, bottom & right};
    const VF bilinear_weight[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    const VI ya = y0 < zero_i ? zero_i : (y0 > h_last ? h_last : y0);
    const VI yb = y0 + 1 < zero_i ? zero_i : (y0 + 1 > h_last ? h_last : y0 + 1);
    const VI xa = x0 < zero_i ? zero_i : (x0 > w_last ? w_last : x0);
    const VI xb = x0 + 1 < zero_i ? zero_i : (x0 + 1 > w_last ? w_last : x0 + 1);
    const VI corner[4] = {ya * row + xa * channels, ya * row + xb * channels,
                          yb * row + xa * channels, yb * row + xb * channels};
    // 0 for a finite location, NaN otherwise: the forward adds it to corner 0's weight
    // (the sample is NaN), the backward finds it again in ly/lx.
    const VF poison = location_poison(y, x);
    for (int k = 0; k < 4; ++k) {
      const Vec<int32_t, L> element = __builtin_convertvector(corner[k], Vec<int32_t, L>);
      std::memcpy(s.element.data() + k * cap + e, &element, sizeof(element));
      const VF weight = valid[k] ? bilinear_weight[k] : VF{};
      if constexpr (kForward) {
        // The mask multiplies even a zero weight, as in the reference: a NaN/inf mask
        // gives NaN also for a tap outside the image.
        store<L>(s.weight.data() + k * cap + e, (k == 0 ? weight + poison : weight) * m);
      } else {
        // The backward keeps a NaN mask off invalid corners (they get no input gradient).
        store<L>(s.weight.data() + k * cap + e, weight);
        store<L>(s.masked.data() + k * cap + e, valid[k] ? weight * m : VF{});
        store<L>(s.valid.data() + k * cap + e, valid[k] ? VF{} + 1 : VF{});
      }
    }
    if constexpr (!kForward) {
      store<L>(s.ly.data() + e, ly);
      store<L>(s.lx.data() + e, lx);
    }
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

// out[c0:c0+R*N] = sum over the 4 corners k and P points of weight * image[element + c0:],
// R vectors of N channels per pass over the taps (each tap's index and weight loaded once
// for all R). One accumulator per chunk and corner: independent FMA chains instead of one
// 4P long (a single chain is bound by the FMA latency, not by the loads).
template <int N, int R, typename scalar_t, typename acc_t>
DCNV3_INLINE void gather_chunk(const scalar_t* image, const int32_t* element, const acc_t* weight,
                               int cap, int points, int c0, acc_t* out) {
  Vec<acc_t, N> acc[R][4] = {};
  for (int p = 0; p < points; ++p)
    for (int k = 0; k < 4; ++k) {
      const acc_t w = weight[k * cap + p];
      const scalar_t* pixel = image + element[k * cap + p] + c0;
      for (int r = 0; r < R; ++r) acc[r][k] += w * load<N, acc_t>(pixel + r * N);
    }
  for (int r = 0; r < R; ++r) store<N>(out + c0 + r * N, (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]));
}

// Per-thread scratch of the forward pass.
template <typename acc_t>
struct ForwardScratch {
  explicit ForwardScratch(const Geometry& g) : samples(g.group * g.points) {}
  Samples<acc_t> samples;
};

template <typename scalar_t, int kBytes>
DCNV3_INLINE void forward_range(const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end,
                                ForwardScratch<at::opmath_type<scalar_t>>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  static_assert(std::is_same_v<scalar_t, acc_t>, "forward_range: float32/float64 only");
  Samples<acc_t>& samples = scratch.samples;
  const Geometry& g = a.g;
  const int gc = g.group_channels, P = g.points;
  const int entries = g.group * P;
  const int cap = samples.capacity;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  for (int64_t index = begin; index < end; ++index) {
    const int64_t n = index / a.pixels;
    const int oy = static_cast<int>((index % a.pixels) / g.out_width);
    const int ox = static_cast<int>(index % g.out_width);
    const scalar_t* image = a.input + n * image_stride;
    compute_samples<true, wide>(g, oy, ox, a.offset + index * entries * 2, a.mask + index * entries, *a.taps, 0,
                                entries, samples);
    for (int grp = 0; grp < g.group; ++grp) {
      const int32_t* element = samples.element.data() + grp * P;
      const acc_t* weight = samples.weight.data() + grp * P;
      const scalar_t* image_g = image + grp * gc;
      scalar_t* out_g = a.output + index * g.channels + grp * gc;
      int c = 0;
      for (; c + 2 * wide <= gc; c += 2 * wide) gather_chunk<wide, 2>(image_g, element, weight, cap, P, c, out_g);
      for (; c + wide <= gc; c += wide) gather_chunk<wide, 1>(image_g, element, weight, cap, P, c, out_g);
      if constexpr (narrow >= 2) {
        for (; c + narrow <= gc; c += narrow)
          gather_chunk<narrow, 1>(image_g, element, weight, cap, P, c, out_g);
      }
      for (; c < gc; ++c) {
        acc_t sum = 0;
        for (int k = 0; k < 4; ++k)
          for (int p = 0; p < P; ++p)
            sum += weight[k * cap + p] * static_cast<acc_t>(image_g[element[k * cap + p] + c]);
        out_g[c] = sum;
      }
    }
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

template <typename acc_t>
struct BackwardScratch {
  BackwardScratch(const Geometry& g, int groups_per_task)
      : samples(groups_per_task * g.points),
        products(4 * samples.capacity) {}
  Samples<acc_t> samples;
  std::vector<acc_t> products;       // d[k] = <go, corner k> of entry e at [k * capacity + e]
};

// Offset and mask gradients of `count` entries from their corner products (see
// location_and_mask_grads in dcnv3_sampling.h), L entries at a time: grad_offset gets
// (x, y) pairs, grad_mask one value per entry; `mask` points at the first entry's mask.
// Whole blocks store vectors (the pairs interleaved by shuffles); the last, partial one
// stores its live lanes.
template <int L, typename acc_t>
DCNV3_INLINE void offset_and_mask_grads(const Samples<acc_t>& s, const acc_t* __restrict products,
                                        const acc_t* __restrict mask, int count, acc_t scale,
                                        acc_t* __restrict grad_offset, acc_t* __restrict grad_mask) {
  using VF = Vec<acc_t, L>;
  const int cap = s.capacity;
  for (int e = 0; e < count; e += L) {
    const int live = std::min(L, count - e);
    VF m{};
    std::copy_n(mask + e, live, reinterpret_cast<acc_t*>(&m));
    VF d[4], v[4], w[4];
    for (int k = 0; k < 4; ++k) {
      d[k] = load<L, acc_t>(products + k * cap + e);
      v[k] = load<L, acc_t>(s.valid.data() + k * cap + e);
      w[k] = load<L, acc_t>(s.weight.data() + k * cap + e);
    }
    const VF ly = load<L, acc_t>(s.ly.data() + e), lx = load<L, acc_t>(s.lx.data() + e);
    const VF e0 = v[0] * d[0], e1 = v[1] * d[1], e2 = v[2] * d[2], e3 = v[3] * d[3];
    const VF grad_x = m * ((acc_t(1) - ly) * (e1 - e0) + ly * (e3 - e2)) * scale;
    const VF grad_y = m * ((acc_t(1) - lx) * (e2 - e0) + lx * (e3 - e1)) * scale;
    // A NaN sample (non-finite location) gives a NaN mask gradient.
    const VF grad_m = w[0] * d[0] + w[1] * d[1] + w[2] * d[2] + w[3] * d[3] + location_poison(ly, lx);
    VF pairs[2];
    interleave<L, acc_t>(grad_x, grad_y, pairs[0], pairs[1]);
    if (live == L) {
      store<L>(grad_offset + 2 * e, pairs[0]);
      store<L>(grad_offset + 2 * e + L, pairs[1]);
      store<L>(grad_mask + e, grad_m);
    } else {
      std::copy_n(reinterpret_cast<const acc_t*>(pairs), 2 * live, grad_offset + 2 * e);
      std::copy_n(reinterpret_cast<const acc_t*>(&grad_m), live, grad_mask + e);
    }
  }
}

// The P taps of one group at one output pixel: adds each tap's share of grad_output to
// grad_input at its four corners and leaves the corner products d[k] = <go, corner k> in
// products[k * cap + p] for offset_and_mask_grads. element and masked_weight start at
// the group's first entry. Raw restrict pointers: the vector stores (memcpy) into grad_input
// would otherwise make the compiler reload every geometry field after each one.
//
// kWidth > 0 is the group width known at compile time (a multiple of `wide`: 16 in every
// published variant but H and G, which have 32): grad_output then stays in registers for
// all taps and the channel loop unrolls, which removes most of the per-tap bookkeeping the
// general loop (kWidth 0) spends on 2-4 vectors (1.4-1.6x the backward per level,
// InternImage-T, Xeon). Both do the same operations in the same order: the same bits.
template <int kWidth, int wide, int narrow, typename scalar_t, typename acc_t>
DCNV3_INLINE void backward_group(const int32_t* __restrict element, const acc_t* __restrict masked_weight,
                                 int cap, const acc_t* __restrict go, const scalar_t* __restrict image,
                                 acc_t* __restrict grad_image, int gc, int points,
                                 acc_t* __restrict products) {
  Vec<acc_t, wide> g[kWidth > 0 ? kWidth / wide : 1];
  if constexpr (kWidth > 0) {
    for (int v = 0; v < kWidth / wide; ++v) g[v] = load<wide, acc_t>(go + v * wide);
  }
  for (int p = 0; p < points; ++p) {
    const scalar_t* src[4];
    acc_t* dst[4];
    acc_t mw[4];
    for (int k = 0; k < 4; ++k) {
      src[k] = image + element[k * cap + p];
      dst[k] = grad_image + element[k * cap + p];
      mw[k] = masked_weight[k * cap + p];
    }
    // Branch-free over the corners (an invalid one has weight 0 and a clamped pixel);
    // the products stay vectors until one four-way reduction per tap.
    acc_t d[4];
    if constexpr (kWidth > 0) {
      Vec<acc_t, wide> prod[4] = {};
      scatter_and_products_fixed<kWidth, wide>(g, src, dst, mw, prod);
      sum4<wide, acc_t>(prod, d);
    } else {
      int c = 0;
      {
        Vec<acc_t, wide> prod[4] = {};
        scatter_and_products<wide>(go, src, dst, mw, c, gc, prod);
        sum4<wide, acc_t>(prod, d);
      }
      if constexpr (narrow >= 2) {
        if (c + narrow <= gc) {  // group widths that are not a multiple of `wide`
          Vec<acc_t, narrow> prod[4] = {};
          scatter_and_products<narrow>(go, src, dst, mw, c, gc, prod);
          acc_t dn[4];
          sum4<narrow, acc_t>(prod, dn);
          for (int k = 0; k < 4; ++k) d[k] += dn[k];
        }
      }
      for (; c < gc; ++c) {
        for (int k = 0; k < 4; ++k) {
          d[k] += go[c] * static_cast<acc_t>(src[k][c]);
          dst[k][c] += mw[k] * go[c];
        }
      }
    }
    for (int k = 0; k < 4; ++k) products[k * cap + p] = d[k];
  }
}

template <typename scalar_t, int kBytes>
DCNV3_INLINE void backward_range(
    const BackwardArgs<scalar_t>& a, int64_t begin, int64_t end,
    BackwardScratch<at::opmath_type<scalar_t>>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  // Half types reach the kernels as float32 copies, so grad_output is read as it is.
  static_assert(std::is_same_v<scalar_t, acc_t>, "backward_range: float32/float64 only");
  const Geometry& g = a.g;
  const int gc = g.group_channels, P = g.points;
  const int cap = scratch.samples.capacity;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  const int blocks = (g.group + a.groups_per_task - 1) / a.groups_per_task;
  const Samples<acc_t>& s = scratch.samples;
  acc_t* products = scratch.products.data();
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / blocks;
    const int g_begin = static_cast<int>(task % blocks) * a.groups_per_task;
    const int g_end = std::min(g.group, g_begin + a.groups_per_task);
    const int count = (g_end - g_begin) * P;
    for (int64_t pix = 0; pix < a.pixels; ++pix) {
      const int64_t index = n * a.pixels + pix;
      const int oy = static_cast<int>(pix / g.out_width);
      const int ox = static_cast<int>(pix % g.out_width);
      // entry e = (grp - g_begin) * P + p has its offset/mask slot at `first + e`
      const int64_t first = (index * g.group + g_begin) * P;
      compute_samples<false, wide>(g, oy, ox, a.offset + first * 2, a.mask + first, *a.taps, g_begin * P,
                                   count, scratch.samples);
      for (int grp = g_begin; grp < g_end; ++grp) {
        const scalar_t* image_g = a.input + n * image_stride + grp * gc;
        acc_t* grad_image_g = a.grad_input + n * image_stride + grp * gc;
        const acc_t* go = a.grad_output + index * g.channels + grp * gc;
        const int e0 = (grp - g_begin) * P;
        const int32_t* element = s.element.data() + e0;
        const acc_t* masked = s.masked.data() + e0;
        if (gc == 16) {
          backward_group<16, wide, narrow>(element, masked, cap, go, image_g, grad_image_g, gc, P, products + e0);
        } else if (gc == 32) {
          backward_group<32, wide, narrow>(element, masked, cap, go, image_g, grad_image_g, gc, P, products + e0);
        } else {
          backward_group<0, wide, narrow>(element, masked, cap, go, image_g, grad_image_g, gc, P, products + e0);
        }
      }
      offset_and_mask_grads<wide>(s, products, a.mask + first, count, scale, a.grad_offset + 2 * first,
                                  a.grad_mask + first);
    }
  }
}

// ---------------------------------------------------------------- ISA variants
#define DCNV3_ISA_VARIANT(NAME, TARGET, BYTES)                                                      \
  template <typename scalar_t>                                                                 \
  __attribute__((flatten)) TARGET void forward_##NAME(                                \
      const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end,                              \
      ForwardScratch<at::opmath_type<scalar_t>>& scratch) {                                    \
    forward_range<scalar_t, BYTES>(a, begin, end, scratch);                                    \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  __attribute__((flatten)) TARGET void backward_##NAME(                               \
      const BackwardArgs<scalar_t>& a, int64_t begin, int64_t end,                             \
      BackwardScratch<at::opmath_type<scalar_t>>& scratch) {                                   \
    backward_range<scalar_t, BYTES>(a, begin, end, scratch);                                   \
  }
DCNV3_FOR_EACH_ISA(DCNV3_ISA_VARIANT)
#undef DCNV3_ISA_VARIANT

template <typename scalar_t>
void run_forward(const ForwardArgs<scalar_t>& a, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const Isa isa = active_isa();
  parallel_chunks(
      total, 16, [&] { return ForwardScratch<acc_t>(a.g); },
      [&](int64_t begin, int64_t end, ForwardScratch<acc_t>& scratch) {
        DCNV3_CALL_ISA(isa, forward, , a, begin, end, scratch);
      });
}

template <typename scalar_t>
void run_backward(const BackwardArgs<scalar_t>& a, int64_t tasks) {
  using acc_t = at::opmath_type<scalar_t>;
  const Isa isa = active_isa();
  parallel_chunks(
      tasks, 1, [&] { return BackwardScratch<acc_t>(a.g, a.groups_per_task); },
      [&](int64_t begin, int64_t end, BackwardScratch<acc_t>& scratch) {
        DCNV3_CALL_ISA(isa, backward, , a, begin, end, scratch);
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
// bfloat16 and float16 compute in float32 copies; the dtype check comes first, since the
// copies would hide a mismatch from prepare_forward/prepare_backward.
bool computes_in_float32(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask) {
  TORCH_CHECK(offset.scalar_type() == input.scalar_type() && mask.scalar_type() == input.scalar_type(),
              "dcnv3: input, offset and mask must share a dtype");
  return input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
}

at::Tensor dcnv3_forward_cpu(const at::Tensor& input, const at::Tensor& offset,
                             const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS) {
  if (computes_in_float32(input, offset, mask)) {
    return dcnv3_forward_cpu(input.to(at::kFloat), offset.to(at::kFloat), mask.to(at::kFloat),
                             DCNV3_GEOMETRY_ARGS)
        .to(input.scalar_type());
  }
  ForwardCall call = prepare_forward(input, offset, mask, DCNV3_GEOMETRY_ARGS);
  AT_DISPATCH_FLOATING_TYPES(call.input.scalar_type(), "dcnv3_forward_cpu", [&] {
    const TapTable<at::opmath_type<scalar_t>> taps(call.g);
    const ForwardArgs<scalar_t> args{call.input.const_data_ptr<scalar_t>(),
                                     call.offset.const_data_ptr<scalar_t>(),
                                     call.mask.const_data_ptr<scalar_t>(),
                                     call.output.mutable_data_ptr<scalar_t>(), call.g,
                                     int64_t(call.g.out_height) * call.g.out_width, &taps};
    run_forward(args, call.batch * args.pixels);
  });
  return call.output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS) {
  if (computes_in_float32(input, offset, mask)) {
    const auto dtype = input.scalar_type();
    auto [gi, go, gm] = dcnv3_backward_cpu(
        grad_output.to(at::kFloat), input.to(at::kFloat), offset.to(at::kFloat),
        mask.to(at::kFloat), DCNV3_GEOMETRY_ARGS);
    return {gi.to(dtype), go.to(dtype), gm.to(dtype)};
  }
  BackwardCall call = prepare_backward(grad_output, input, offset, mask, DCNV3_GEOMETRY_ARGS);
  const Geometry& g = call.g;
  AT_DISPATCH_FLOATING_TYPES(call.input.scalar_type(), "dcnv3_backward_cpu", [&] {
    const TapTable<at::opmath_type<scalar_t>> taps(g);
    const BackwardArgs<scalar_t> args{
        call.grad_output.const_data_ptr<scalar_t>(), call.input.const_data_ptr<scalar_t>(),
        call.offset.const_data_ptr<scalar_t>(), call.mask.const_data_ptr<scalar_t>(),
        call.grad_input.mutable_data_ptr<at::opmath_type<scalar_t>>(),
        call.grad_offset.mutable_data_ptr<scalar_t>(), call.grad_mask.mutable_data_ptr<scalar_t>(),
        g, int64_t(g.out_height) * g.out_width, &taps, groups_per_task(g, call.batch)};
    run_backward(args, call.batch * ((g.group + args.groups_per_task - 1) / args.groups_per_task));
  });
  return call.gradients();
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3", &dcnv3::dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3::dcnv3_backward_cpu);
}
