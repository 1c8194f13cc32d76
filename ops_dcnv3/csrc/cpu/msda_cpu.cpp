// CPU kernels of ops_dcnv3::msda (multi-scale deformable attention): float64, float32 and
// bfloat16 (accumulating in float32); float16 runs through float32 copies.
//
// Forward: parallel over (batch, query, head) triples, each writing its own head_dim outputs.
// Backward: parallel over (batch, head) pairs. A pair's writes (grad_value[b, :, h, :] and the
// location/attention gradients of its points) belong to it alone: no atomics, and the
// result is deterministic.
// Where a head's samples outnumber its keys, a pair first packs the head's value rows
// (heads * head_dim apart in value) and accumulates into a packed gradient (packs_heads:
// 1.3x faster backward at the BEVFormer TSA and DINO shapes, the same bits).
//
// Per point, the corner geometry comes from msda_sampling.h (the bilinear arithmetic shared
// with DCNv3); the inner loops run over head_dim with GCC vector types, compiled for
// baseline x86-64, AVX2+FMA and AVX-512 and picked at run time like DCNv3's
// (DCNV3_CPU_ISA). The backward of 32-channel heads (DINO, Deformable DETR, BEVFormer)
// holds grad_output in registers and unrolls the channel loop (scatter_and_products_fixed,
// as DCNv3's 16/32-channel groups: backward 5-15 % faster at the DINO shape, 30-40 % at
// BEVFormer's TSA, float32 and bfloat16). A corner outside the level reads a row of zeros
// and writes into a scratch row, so the loops have no branches and a NaN in value counts
// exactly where grid_sample reads it.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../msda.h"
#include "cpu_vec.h"

namespace dcnv3 {
namespace msda {
namespace {

template <typename acc_t>
struct PointTable;

template <typename scalar_t>
struct Args {
  const scalar_t* value;
  const int64_t* spatial_shapes;     // (levels, 2): H, W
  const int64_t* level_start_index;  // (levels,)
  const scalar_t* sampling_locations;
  const scalar_t* attention_weights;
  Sizes s;
  const PointTable<at::opmath_type<scalar_t>>* table;
  // forward
  scalar_t* output;
  // backward
  const scalar_t* grad_output;
  at::opmath_type<scalar_t>* grad_value;
  scalar_t* grad_sampling_locations;
  scalar_t* grad_attention_weights;
};

// Level of each point of one (query, head), per call: point e = level * points + p. Padded to
// whole vectors (16 lanes at most) so that the last, partial block reads defined values.
template <typename acc_t>
struct PointTable {
  PointTable(const Sizes& s, const int64_t* spatial_shapes, const int64_t* level_start_index)
      : count(static_cast<int>(s.levels * s.points)), capacity((count + 15) / 16 * 16), height(capacity + 16, 1),
        width(capacity + 16, 1), height_i(capacity + 16, 1), width_i(capacity + 16, 1),
        first_key(capacity + 16, 0) {
    for (int e = 0; e < count; ++e) {
      const int64_t l = e / s.points;
      height_i[e] = static_cast<int32_t>(spatial_shapes[2 * l]);
      width_i[e] = static_cast<int32_t>(spatial_shapes[2 * l + 1]);
      height[e] = acc_t(height_i[e]);
      width[e] = acc_t(width_i[e]);
      first_key[e] = static_cast<int32_t>(level_start_index[l]);
    }
  }
  int count, capacity;
  std::vector<acc_t> height, width;
  std::vector<int32_t> height_i, width_i, first_key;
};

// Geometry of the points of one (query, head), structure of arrays: corner k of point e at
// [k * capacity + e]. `offset` is the corner's element offset from value[b, 0, h, 0] (fits
// int32: checked per call), `valid` says it is inside its level; `weight` is the bilinear
// weight (0 outside), times the attention weight in the forward pass. ly/lx are NaN along a
// non-finite axis (msda_sampling.h), `finite` is 0 for a non-finite location.
template <typename acc_t>
struct Points {
  explicit Points(int capacity)
      : capacity(capacity), offset(4 * capacity + 64), valid(4 * capacity + 64), weight(4 * capacity + 64),
        ly(capacity + 16), lx(capacity + 16), finite(capacity + 16) {}
  int capacity;
  std::vector<int32_t> offset, valid;
  std::vector<acc_t> weight, ly, lx;
  std::vector<int32_t> finite;
};

template <typename acc_t>
using LaneInt = std::conditional_t<sizeof(acc_t) == 8, int64_t, int32_t>;

// The arithmetic of sample_location() / bilinear() (msda_sampling.h, shared with DCNv3),
// written lane-wise over L points at a time because GCC does not vectorise the scalar form.
// `loc` holds the (x, y) pairs and `attention` the weights of the (query, head)'s points.
// Returns whether every location is finite. The forward pass also writes the corner pointers
// (`head_value` + offset, or `zeros` outside) to `corner` and prefetches them.
template <bool kForward, int L, typename scalar_t, typename acc_t>
DCNV3_INLINE bool compute_points(const PointTable<acc_t>& table, const scalar_t* __restrict loc,
                                 const scalar_t* __restrict attention, int32_t key_stride, Points<acc_t>& pts,
                                 const scalar_t* head_value = nullptr, const scalar_t* zeros = nullptr,
                                 const scalar_t** corner_out = nullptr) {
  using VF = Vec<acc_t, L>;
  using VI = Vec<LaneInt<acc_t>, L>;
  using V32 = Vec<int32_t, L>;
  const int count = table.count, cap = pts.capacity;
  scalar_t staged_loc[2 * L], staged_attention[L];
  V32 all_finite = V32{} - 1;
  for (int e = 0; e < count; e += L) {
    const scalar_t* xy = loc + 2 * e;
    const scalar_t* att = attention + e;
    if (e + L > count) {  // partial block: zero-padded copies (the padding lanes are never read)
      for (int l = 0; l < L; ++l) {
        const bool live = e + l < count;
        staged_loc[2 * l] = live ? xy[2 * l] : scalar_t(0);
        staged_loc[2 * l + 1] = live ? xy[2 * l + 1] : scalar_t(0);
        staged_attention[l] = live ? att[l] : scalar_t(0);
      }
      xy = staged_loc;
      att = staged_attention;
    }
    VF loc_x, loc_y, a;
    for (int l = 0; l < L; ++l) {
      loc_x[l] = static_cast<acc_t>(xy[2 * l]);
      loc_y[l] = static_cast<acc_t>(xy[2 * l + 1]);
      a[l] = kForward ? static_cast<acc_t>(att[l]) : acc_t(1);
    }
    const VF height = load<L, acc_t>(table.height.data() + e), width = load<L, acc_t>(table.width.data() + e);
    VI height_i, width_i, first_key;
    for (int l = 0; l < L; ++l) {
      height_i[l] = table.height_i[e + l];
      width_i[l] = table.width_i[e + l];
      first_key[l] = table.first_key[e + l];
    }
    const VF x = loc_x * width - acc_t(0.5), y = loc_y * height - acc_t(0.5);
    const VI finite_x = (x - x) == acc_t(0), finite_y = (y - y) == acc_t(0);  // inf - inf and NaN are NaN
    const VI inside = (y > acc_t(-1)) & (x > acc_t(-1)) & (y < height) & (x < width);
    VF ys = y > acc_t(-2) ? y : acc_t(-2), xs = x > acc_t(-2) ? x : acc_t(-2);
    ys = ys < height ? ys : height;
    xs = xs < width ? xs : width;
    VI y0 = __builtin_convertvector(ys, VI), x0 = __builtin_convertvector(xs, VI);
    y0 += __builtin_convertvector(y0, VF) > ys;  // floor: truncation went up for negatives (lanes -1/0)
    x0 += __builtin_convertvector(x0, VF) > xs;
    const VF ly = ys - __builtin_convertvector(y0, VF), lx = xs - __builtin_convertvector(x0, VF);
    const VF hy = acc_t(1) - ly, hx = acc_t(1) - lx;
    const VI top = inside & (y0 >= 0), bottom = inside & (y0 + 1 < height_i);
    const VI left = x0 >= 0, right = x0 + 1 < width_i;
    const VI valid[4] = {top & left, top & right, bottom & left, bottom & right};
    const VF bilinear_weight[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    const VI pixel = first_key + y0 * width_i + x0;
    const VI corner[4] = {pixel, pixel + 1, pixel + width_i, pixel + width_i + 1};
    for (int k = 0; k < 4; ++k) {
      const V32 offset = __builtin_convertvector(corner[k] * LaneInt<acc_t>(key_stride), V32);
      std::memcpy(pts.offset.data() + k * cap + e, &offset, sizeof(offset));
      const V32 valid32 = __builtin_convertvector(valid[k], V32);
      std::memcpy(pts.valid.data() + k * cap + e, &valid32, sizeof(valid32));
      // 0 * attention outside, not 0: a NaN attention weight makes the sum NaN, as in the reference.
      store<L>(pts.weight.data() + k * cap + e, (valid[k] ? bilinear_weight[k] : VF{}) * a);
      if constexpr (kForward) {  // pointers lane-wise: a scalar loop over them cost as much as the gather
        using VP = Vec<int64_t, L>;
        const VP inside_ptr = (VP{} + reinterpret_cast<int64_t>(head_value)) +
                              __builtin_convertvector(offset, VP) * int64_t(sizeof(scalar_t));
        const VP ptr = __builtin_convertvector(valid32, VP) ? inside_ptr : VP{} + reinterpret_cast<int64_t>(zeros);
        std::memcpy(corner_out + k * cap + e, &ptr, sizeof(ptr));
        for (int l = 0; l < L; ++l) __builtin_prefetch(reinterpret_cast<const void*>(ptr[l]));
      }
    }
    const V32 finite = __builtin_convertvector(finite_x & finite_y, V32);
    std::memcpy(pts.finite.data() + e, &finite, sizeof(finite));
    all_finite &= finite;  // padding lanes hold (0, 0): finite
    if constexpr (!kForward) {
      store<L>(pts.ly.data() + e, finite_y ? ly : VF{} + acc_t(NAN));
      store<L>(pts.lx.data() + e, finite_x ? lx : VF{} + acc_t(NAN));
    }
  }
  // Reduced in registers: reading back the lanes just stored would stall on store forwarding.
  int32_t reduced = -1;
  for (int l = 0; l < L; ++l) reduced &= all_finite[l];
  return reduced != 0;
}

// Per-thread scratch.
template <typename scalar_t>
struct Scratch {
  using acc_t = at::opmath_type<scalar_t>;
  Scratch(const Sizes& s, int capacity)
      : points(capacity), points_next(capacity), corner(4 * capacity), corner_next(4 * capacity),
        zeros(s.head_dim, scalar_t(0)), sink(s.head_dim),
        go(s.head_dim), acc(s.head_dim) {}
  Points<acc_t> points, points_next;  // this task's and (forward) the next one's
  std::vector<const scalar_t*> corner, corner_next;  // forward: corner pointers, [k * capacity + e]
  std::vector<scalar_t> zeros;          // read by corners outside the level
  std::vector<acc_t> sink;              // written by corners outside the level (backward)
  std::vector<acc_t> go;                // one head's grad_output in acc_t
  std::vector<acc_t> acc;               // one head's output in acc_t
  std::vector<scalar_t> packed_value;   // backward: one (batch, head)'s value rows, packed
  std::vector<acc_t> packed_grad;       // backward: their gradient, packed
};

// out[c..] = sum over points e and corners k of weight * corner[c..], for R vectors of N
// lanes. The corner loop is unrolled so that the two accumulator sets (even and odd
// corners, halving the dependency chains) stay in registers: indexed by a run-time corner
// they lived on the stack (BEVFormer TSA forward, one thread: 3.9 -> 2.8 ms with every
// corner reading the same row).
template <int N, int R, typename scalar_t, typename acc_t>
DCNV3_INLINE void gather_block(const scalar_t* const* corner, const acc_t* weight, int cap, int count, int c,
                               acc_t* out) {
  Vec<acc_t, N> even[R] = {}, odd[R] = {};
  for (int e = 0; e < count; ++e) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const scalar_t* src = corner[k * cap + e] + c;
      const acc_t w = weight[k * cap + e];
      for (int r = 0; r < R; ++r) (k & 1 ? odd : even)[r] += w * load<N, acc_t>(src + r * N);
    }
  }
  for (int r = 0; r < R; ++r) store<N>(out + c + r * N, even[r] + odd[r]);
}

template <int N, typename scalar_t, typename acc_t>
DCNV3_INLINE void gather_channels(const scalar_t* const* corner, const acc_t* weight, int cap, int count, int& c,
                                  int head_dim, acc_t* out) {
  for (; c + 4 * N <= head_dim; c += 4 * N) gather_block<N, 4>(corner, weight, cap, count, c, out);
  if (c + 2 * N <= head_dim) {
    gather_block<N, 2>(corner, weight, cap, count, c, out);
    c += 2 * N;
  }
  if (c + N <= head_dim) {
    gather_block<N, 1>(corner, weight, cap, count, c, out);
    c += N;
  }
}

// Geometry and corner pointers of task (b, q, h), with the corners' cache lines prefetched:
// the forward prepares one task ahead, so the gather of this task hides the next one's loads.
template <typename scalar_t, int kBytes>
DCNV3_INLINE bool prepare_task(const Args<scalar_t>& a, int64_t b, int64_t q, int64_t h, Points<at::opmath_type<scalar_t>>& pts,
                               const scalar_t** corner, const scalar_t* zeros) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  const PointTable<acc_t>& table = *a.table;
  const Sizes& s = a.s;
  const int count = table.count;
  const int32_t key_stride = static_cast<int32_t>(s.heads * s.head_dim);
  const int64_t point0 = ((b * s.queries + q) * s.heads + h) * count;
  // The locations of a few tasks ahead, early too.
  const scalar_t* ahead = a.sampling_locations + 2 * (point0 + 4 * count);
  for (int i = 0; i < 2 * count; i += 64 / int(sizeof(scalar_t))) __builtin_prefetch(ahead + i);
  __builtin_prefetch(a.attention_weights + point0 + 4 * count);
  const scalar_t* head_value = a.value + (b * s.keys * s.heads + h) * s.head_dim;
  return count <= narrow  // few points (one level): half-width lanes waste less
             ? compute_points<true, (narrow >= 2 ? narrow : wide)>(table, a.sampling_locations + 2 * point0,
                                                                   a.attention_weights + point0, key_stride, pts,
                                                                   head_value, zeros, corner)
             : compute_points<true, wide>(table, a.sampling_locations + 2 * point0, a.attention_weights + point0,
                                          key_stride, pts, head_value, zeros, corner);
}

template <typename scalar_t, int kBytes>
DCNV3_INLINE void forward_range(const Args<scalar_t>& a,
                                int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  const Sizes& s = a.s;
  const int head_dim = static_cast<int>(s.head_dim);
  const int count = a.table->count, cap = scratch.points.capacity;
  Points<acc_t>* pts = &scratch.points;
  Points<acc_t>* pts_next = &scratch.points_next;
  const scalar_t** corner = scratch.corner.data();
  const scalar_t** corner_next = scratch.corner_next.data();
  // float32/float64 sum straight into the output; bfloat16 through an acc_t row
  constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;
  // task = (b * queries + q) * heads + h, in memory order of the locations and the output; the
  // heads of a query read neighbouring slices of the same keys. Counted without divisions (a
  // task can be only a few points).
  int64_t h = begin % s.heads, q = (begin / s.heads) % s.queries, b = begin / (s.heads * s.queries);
  bool finite = begin < end && prepare_task<scalar_t, kBytes>(a, b, q, h, *pts, corner, scratch.zeros.data());
  for (int64_t task = begin; task < end; ++task) {
    const int64_t bqh = (b * s.queries + q) * s.heads + h;
    int64_t next_h = h + 1, next_q = q, next_b = b;
    if (next_h == s.heads) {
      next_h = 0;
      if (++next_q == s.queries) {
        next_q = 0;
        ++next_b;
      }
    }
    const bool next_finite = task + 1 < end && prepare_task<scalar_t, kBytes>(a, next_b, next_q, next_h, *pts_next,
                                                                              corner_next, scratch.zeros.data());
    scalar_t* out = a.output + bqh * s.head_dim;
    acc_t* acc = kDirect ? reinterpret_cast<acc_t*>(out) : scratch.acc.data();
    const acc_t* weight = pts->weight.data();
    int c = 0;
    gather_channels<wide>(corner, weight, cap, count, c, head_dim, acc);
    if constexpr (narrow >= 2) {
      if (c + narrow <= head_dim) {
        gather_block<narrow, 1>(corner, weight, cap, count, c, acc);
        c += narrow;
      }
    }
    for (; c < head_dim; ++c) {
      acc_t sum = 0;
      for (int i = 0; i < 4 * cap; i += cap)
        for (int e = 0; e < count; ++e) sum += weight[i + e] * static_cast<acc_t>(corner[i + e][c]);
      acc[c] = sum;
    }
    if (!finite) {  // grid_sample: a non-finite location makes the sample, and so the sum, NaN
      for (int i = 0; i < head_dim; ++i) out[i] = std::numeric_limits<scalar_t>::quiet_NaN();
    } else if constexpr (!kDirect) {
      for (int i = 0; i < head_dim; ++i) out[i] = static_cast<scalar_t>(acc[i]);
    }
    std::swap(pts, pts_next);
    std::swap(corner, corner_next);
    finite = next_finite;
    b = next_b;
    q = next_q;
    h = next_h;
  }
}

// A head's rows lie heads * head_dim apart in value and grad_value (1 KiB for 8 heads of 32
// float32 channels), so they fall into few cache sets and evict each other (the BEVFormer
// TSA backward ran 1.9x slower than the same work with one head). Where a head's samples
// outnumber its keys, each (batch, head) task packs the head's value rows, accumulates into
// a packed gradient (the same sums in the same order), and stores that into grad_value:
// every element once, so grad_value needs no zero fill first.
bool packs_heads(const Sizes& s) { return s.heads > 1 && s.queries * s.levels * s.points >= s.keys; }

template <typename scalar_t, int kBytes>
DCNV3_INLINE void backward_range(const Args<scalar_t>& a,
                                 int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {
  using acc_t = at::opmath_type<scalar_t>;
  const PointTable<acc_t>& table = *a.table;
  constexpr int wide = kWide<acc_t, kBytes>, narrow = kNarrow<acc_t, kBytes>;
  const Sizes& s = a.s;
  const int head_dim = static_cast<int>(s.head_dim);
  const int32_t key_stride = static_cast<int32_t>(s.heads * s.head_dim);
  const int count = table.count, cap = scratch.points.capacity;
  const Points<acc_t>& pts = scratch.points;
  acc_t* go = scratch.go.data();
  const bool fixed_32 = head_dim == 32;
  Vec<acc_t, wide> go_vectors[32 / wide];
  const bool pack = packs_heads(s);
  const int32_t sample_stride = pack ? head_dim : key_stride;
  if (pack) scratch.packed_value.resize(s.keys * s.head_dim);
  for (int64_t task = begin; task < end; ++task) {  // task = b * heads + h
    const int64_t b = task / s.heads, h = task % s.heads;
    const int64_t head_offset = (b * s.keys * s.heads + h) * s.head_dim;
    const scalar_t* head_value = a.value + head_offset;
    acc_t* head_grad = a.grad_value + head_offset;
    if (pack) {
      for (int64_t k = 0; k < s.keys; ++k)
        std::memcpy(scratch.packed_value.data() + k * head_dim, head_value + k * key_stride,
                    head_dim * sizeof(scalar_t));
      scratch.packed_grad.assign(s.keys * s.head_dim, acc_t(0));
      head_value = scratch.packed_value.data();
      head_grad = scratch.packed_grad.data();
    }
    for (int64_t q = 0; q < s.queries; ++q) {
      const int64_t bqh = (b * s.queries + q) * s.heads + h;
      const scalar_t* gout = a.grad_output + bqh * s.head_dim;
      if (fixed_32) {  // straight into registers (load widens bfloat16)
        for (int v = 0; v < 32 / wide; ++v) go_vectors[v] = load<wide, acc_t>(gout + v * wide);
      } else {
        for (int c = 0; c < head_dim; ++c) go[c] = static_cast<acc_t>(gout[c]);
      }
      const int64_t point0 = bqh * count;
      if (count <= narrow) {
        compute_points<false, (narrow >= 2 ? narrow : wide)>(table, a.sampling_locations + 2 * point0,
                                                             a.attention_weights + point0, sample_stride,
                                                             scratch.points);
      } else {
        compute_points<false, wide>(table, a.sampling_locations + 2 * point0, a.attention_weights + point0,
                                    sample_stride, scratch.points);
      }
      for (int e = 0; e < count; ++e) {
        const int64_t point = point0 + e;
        const acc_t attention = static_cast<acc_t>(a.attention_weights[point]);
        Bilinear<acc_t> bl;
        const scalar_t* src[4];
        acc_t* dst[4];
        acc_t mw[4];
        for (int k = 0; k < 4; ++k) {
          const int i = k * cap + e;
          src[k] = pts.valid[i] ? head_value + pts.offset[i] : scratch.zeros.data();
          dst[k] = pts.valid[i] ? head_grad + pts.offset[i] : scratch.sink.data();
          bl.weight[k] = pts.weight[i];
          mw[k] = attention * pts.weight[i];
        }
        bl.ly = pts.ly[e];
        bl.lx = pts.lx[e];
        acc_t d[4];
        if (fixed_32) {  // 32 channels per head (DINO, Deformable DETR, BEVFormer): go in registers
          Vec<acc_t, wide> prod[4] = {};
          scatter_and_products_fixed<32, wide>(go_vectors, src, dst, mw, prod);
          sum4<wide, acc_t>(prod, d);
        } else {
          int c = 0;
          Vec<acc_t, wide> prod[4] = {};
          scatter_and_products<wide>(go, src, dst, mw, c, head_dim, prod);
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
        }
        acc_t grad_x, grad_y, grad_attention;
        location_and_attention_grads(bl, d, attention, pts.finite[e] != 0, table.height_i[e], table.width_i[e],
                                     grad_x, grad_y, grad_attention);
        a.grad_sampling_locations[2 * point] = static_cast<scalar_t>(grad_x);
        a.grad_sampling_locations[2 * point + 1] = static_cast<scalar_t>(grad_y);
        a.grad_attention_weights[point] = static_cast<scalar_t>(grad_attention);
      }
    }
    if (pack) {
      acc_t* grad = a.grad_value + head_offset;
      const acc_t* packed = scratch.packed_grad.data();
      for (int64_t k = 0; k < s.keys; ++k)
        std::memcpy(grad + k * key_stride, packed + k * head_dim, head_dim * sizeof(acc_t));
    }
  }
}

// ---------------------------------------------------------------- ISA variants
#define MSDA_ISA_VARIANT(NAME, TARGET, BYTES)                                                   \
  template <typename scalar_t>                                                              \
  __attribute__((flatten)) TARGET void forward_##NAME(                             \
      const Args<scalar_t>& a, int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {    \
    forward_range<scalar_t, BYTES>(a, begin, end, scratch);                                 \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  __attribute__((flatten)) TARGET void backward_##NAME(                            \
      const Args<scalar_t>& a, int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {    \
    backward_range<scalar_t, BYTES>(a, begin, end, scratch);                                \
  }
DCNV3_FOR_EACH_ISA(MSDA_ISA_VARIANT)
#undef MSDA_ISA_VARIANT

// Corner offsets inside one image's value are int32 (CPU kernels).
void check_offsets_fit(const Sizes& s) {
  TORCH_CHECK((s.keys + 1) * s.heads * s.head_dim < (int64_t(1) << 31),
              "msda: value has ", s.keys * s.heads * s.head_dim,
              " elements per image; the CPU kernels support fewer than 2^31");
}

template <typename scalar_t>
void run(const Args<scalar_t>& a, bool backward) {
  check_offsets_fit(a.s);
  const Isa isa = active_isa();
  const int64_t tasks = backward ? a.s.batch * a.s.heads : a.s.batch * a.s.heads * a.s.queries;
  parallel_chunks(
      tasks, backward ? 1 : 64, [&] { return Scratch<scalar_t>(a.s, a.table->capacity); },
      [&](int64_t begin, int64_t end, Scratch<scalar_t>& scratch) {
        if (backward) {
          DCNV3_CALL_ISA(isa, backward, , a, begin, end, scratch);
        } else {
          DCNV3_CALL_ISA(isa, forward, , a, begin, end, scratch);
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
    const PointTable<at::opmath_type<scalar_t>> table(call.s, a.spatial_shapes, a.level_start_index);
    a.table = &table;
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
                                       sampling_locations, attention_weights, im2col_step, &packs_heads);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, call.value.scalar_type(), "msda_backward_cpu", [&] {
    Args<scalar_t> a = common_args<scalar_t>(call.value, call.spatial_shapes, call.level_start_index,
                                             call.sampling_locations, call.attention_weights, call.s);
    const PointTable<at::opmath_type<scalar_t>> table(call.s, a.spatial_shapes, a.level_start_index);
    a.table = &table;
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
