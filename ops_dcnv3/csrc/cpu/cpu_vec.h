// CPU building blocks shared by the kernels of ops_dcnv3 (DCNv3, MSDA, LayerNorm, GELU,
// mask softmax): GCC vector types with loads that widen bfloat16, tree reductions and lane
// shuffles, the channel loops of a bilinear backward, work sharing between threads, and
// the run-time choice of instruction set (DCNV3_CPU_ISA).
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

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
DCNV3_VEC(uint16_t, 32)
DCNV3_VEC(uint16_t, 16)
DCNV3_VEC(uint16_t, 8)
DCNV3_VEC(uint16_t, 4)
DCNV3_VEC(uint16_t, 2)
DCNV3_VEC(uint32_t, 16)
DCNV3_VEC(uint32_t, 8)
DCNV3_VEC(uint32_t, 4)
DCNV3_VEC(uint32_t, 2)
DCNV3_VEC(int32_t, 16)
DCNV3_VEC(int32_t, 8)
DCNV3_VEC(int32_t, 4)
DCNV3_VEC(int32_t, 2)
DCNV3_VEC(int64_t, 16)
DCNV3_VEC(int64_t, 8)
DCNV3_VEC(int64_t, 4)
DCNV3_VEC(int64_t, 2)
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

// The four sums of v[0..3] at once, as d[0..3]: halves folded until four lanes are left,
// then two rounds of pairwise adds across the four vectors. Far fewer shuffles than four
// separate horizontal_sum calls (the backward does this once per tap).
template <int N, typename acc_t>
DCNV3_INLINE void sum4(const Vec<acc_t, N> v[4], acc_t d[4]) {
  if constexpr (N < 4) {
    for (int k = 0; k < 4; ++k) d[k] = horizontal_sum<N, acc_t>(v[k]);
  } else if constexpr (N > 4) {
    Vec<acc_t, N / 2> half[4];
    for (int k = 0; k < 4; ++k) {
      Vec<acc_t, N / 2> low, high;
      std::memcpy(&low, &v[k], sizeof(low));
      std::memcpy(&high, reinterpret_cast<const char*>(&v[k]) + sizeof(low), sizeof(high));
      half[k] = low + high;
    }
    sum4<N / 2, acc_t>(half, d);
  } else {
    using V4 = Vec<acc_t, 4>;
    // a = [v0 pairs, v1 pairs], b = [v2 pairs, v3 pairs], then one more pairwise round.
    const V4 a = __builtin_shufflevector(v[0], v[1], 0, 2, 4, 6) + __builtin_shufflevector(v[0], v[1], 1, 3, 5, 7);
    const V4 b = __builtin_shufflevector(v[2], v[3], 0, 2, 4, 6) + __builtin_shufflevector(v[2], v[3], 1, 3, 5, 7);
    const V4 r = __builtin_shufflevector(a, b, 0, 2, 4, 6) + __builtin_shufflevector(a, b, 1, 3, 5, 7);
    for (int k = 0; k < 4; ++k) d[k] = r[k];
  }
}

// Even and odd lanes of the 2L values a, b (x/y pairs into x and y), and back.
template <int L, typename T, size_t... I>
DCNV3_INLINE void deinterleave(Vec<T, L> a, Vec<T, L> b, Vec<T, L>& even, Vec<T, L>& odd,
                               std::index_sequence<I...>) {
  even = __builtin_shufflevector(a, b, (2 * I)...);
  odd = __builtin_shufflevector(a, b, (2 * I + 1)...);
}
template <int L, typename T>
DCNV3_INLINE void deinterleave(Vec<T, L> a, Vec<T, L> b, Vec<T, L>& even, Vec<T, L>& odd) {
  deinterleave<L, T>(a, b, even, odd, std::make_index_sequence<L>{});
}
template <int L, typename T, size_t... I>
DCNV3_INLINE void interleave(Vec<T, L> even, Vec<T, L> odd, Vec<T, L>& low, Vec<T, L>& high,
                             std::index_sequence<I...>) {
  low = __builtin_shufflevector(even, odd, (I / 2 + (I % 2) * L)...);
  high = __builtin_shufflevector(even, odd, (L / 2 + I / 2 + (I % 2) * L)...);
}
template <int L, typename T>
DCNV3_INLINE void interleave(Vec<T, L> even, Vec<T, L> odd, Vec<T, L>& low, Vec<T, L>& high) {
  interleave<L, T>(even, odd, low, high, std::make_index_sequence<L>{});
}

// Channel loops use the ISA's native vector width (kBytes: 16 SSE2, 32 AVX2, 64
// AVX-512; wider generic vectors make GCC spill), then half of it, then scalars.
template <typename acc_t, int kBytes>
constexpr int kWide = kBytes / sizeof(acc_t);
template <typename acc_t, int kBytes>
constexpr int kNarrow = kWide<acc_t, kBytes> / 2;

// One tap's channel loop over its four corners k: adds mw[k] * go to grad_image at
// corner k and accumulates the products go * image(corner k) lane-wise in prod[k].
template <int N, typename scalar_t, typename acc_t>
DCNV3_INLINE void scatter_and_products(const acc_t* go, const scalar_t* const src[4],
                                       acc_t* const dst[4], const acc_t mw[4], int& c, int gc,
                                       Vec<acc_t, N> prod[4]) {
  for (; c + N <= gc; c += N) {
    const Vec<acc_t, N> g = load<N, acc_t>(go + c);
    for (int k = 0; k < 4; ++k) {
      prod[k] += g * load<N, acc_t>(src[k] + c);
      // Two clamped corners may share a pixel: load after the previous store, in order.
      store<N>(dst[k] + c, load<N, acc_t>(dst[k] + c) + mw[k] * g);
    }
  }
}

// The same for a channel count GC known at compile time (a multiple of N), with the
// channels of go already in registers (g[GC / N]): the loop unrolls and go is loaded once
// per group of taps instead of once per tap.
template <int GC, int N, typename scalar_t, typename acc_t>
DCNV3_INLINE void scatter_and_products_fixed(const Vec<acc_t, N>* g, const scalar_t* const src[4],
                                             acc_t* const dst[4], const acc_t mw[4], Vec<acc_t, N> prod[4]) {
  static_assert(GC % N == 0, "scatter_and_products_fixed: GC must be a multiple of the vector width");
  for (int k = 0; k < 4; ++k)
    for (int v = 0; v < GC / N; ++v) {
      prod[k] += g[v] * load<N, acc_t>(src[k] + v * N);
      store<N>(dst[k] + v * N, load<N, acc_t>(dst[k] + v * N) + mw[k] * g[v]);
    }
}

// e^a for float32 lanes with a <= 0 (GELU's density, softmax): 2^k e^r, |r| <= ln2 / 2,
// a degree-7 Taylor polynomial (2 ulps); lanes below -80 give 0 (no denormal arithmetic
// downstream), NaN stays NaN.
template <int L>
DCNV3_INLINE Vec<float, L> exp_nonpositive(Vec<float, L> a) {
  using V = Vec<float, L>;
  // k rounded to nearest by the 1.5 * 2^23 shift (exact for |k| < 2^22)
  const V k = (a * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const V r = (a - k * 0.693359375f) - k * -2.12194440e-4f;  // ln 2 in two parts
  V p = r * (1.0f / 5040) + (1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Vec<int32_t, L> bits = (__builtin_convertvector(k, Vec<int32_t, L>) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return a < -80.0f ? V{} : p * scale;
}

// The exact GELU's pieces, the normal distribution Phi(v) and density phi(v) per lane
// (used by the GELU and LayerNorm + GELU kernels): phi by exp_nonpositive, the normal tail
// Q(|v|) = phi(v) * M(|v|) with M, the Mills ratio, as t * poly(2t - 1), t = 1 / (1 + 0.4 |v|)
// (a least-squares fit of our own over 0 <= |v| <= 14: relative error 2.6e-8 in exact
// arithmetic, ~3e-7 in float32), and Phi = 1 - Q or Q by the sign, so that the negative
// side keeps its relative precision. No erf.
constexpr float kMills[] = {0.70853022416881672f,    0.43484195459687813f,   0.13233703298301061f,
                            -0.0092625175863567822f, -0.01643048053379877f,  0.0016191826098510532f,
                            0.0025296442321477196f,  -0.00072125853441093197f, -0.00029867258264262017f,
                            0.00018776030375668493f, -1.8699568673827661e-05f};
constexpr float kInvSqrt2Pi = 0.398942280401432678f;

template <int L>
DCNV3_INLINE void normal_cdf_pdf(Vec<float, L> v, Vec<float, L>& cdf, Vec<float, L>& phi) {
  using V = Vec<float, L>;
  const V z = v < 0.0f ? -v : v;
  // Below e^-80 the tail Q is under 6e-37: exp_nonpositive's zero, not denormal arithmetic.
  phi = exp_nonpositive<L>(-0.5f * z * z) * kInvSqrt2Pi;
  const V t = 1.0f / (1.0f + 0.4f * z);
  const V u = 2.0f * t - 1.0f;
  V m = V{} + kMills[10];
  for (int i = 9; i >= 0; --i) m = m * u + kMills[i];
  const V q = phi * t * m;
  cdf = v < 0.0f ? q : 1.0f - q;
}

// The same for one value through std::erfc and std::exp (float64, and scalar remainders).
template <typename T>
inline void normal_cdf_pdf_scalar(T v, T& cdf, T& phi) {
  cdf = T(0.5) * std::erfc(-v * T(M_SQRT1_2));
  phi = std::exp(T(-0.5) * v * v) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
}

// GELU(v) = v * Phi(v) and its derivative Phi(v) + v * phi(v), per lane: float32 vectors
// as above, float64 lane by lane through the scalar form.
template <int L, typename acc_t>
DCNV3_INLINE void gelu_lanes(Vec<acc_t, L> v, Vec<acc_t, L>& gelu, Vec<acc_t, L>& derivative) {
  Vec<acc_t, L> cdf, phi;
  if constexpr (std::is_same_v<acc_t, float>) {
    normal_cdf_pdf<L>(v, cdf, phi);
  } else {
    for (int l = 0; l < L; ++l) normal_cdf_pdf_scalar<acc_t>(v[l], cdf[l], phi[l]);
  }
  gelu = v * cdf;
  derivative = cdf + v * phi;
}

// ---------------------------------------------------------------- work sharing
// body(begin, end, scratch) over [0, count) in chunks of at least `min_chunk` (about eight
// per thread), each chunk taken by whichever thread is free next; make_scratch() runs once
// per thread. ATen's parallel_for splits a range into one fixed share per thread, so on a
// shared host a thread whose vCPU is held up delays the whole call by its share; here it
// delays its current chunk only (DCNv3 forward and backward: 10-17 % faster per call at 2
// threads on a busy Xeon host). Chunks must write disjoint outputs: then the result does
// not depend on the schedule.
template <typename MakeScratch, typename Body>
void parallel_chunks(int64_t count, int64_t min_chunk, const MakeScratch& make_scratch, const Body& body) {
  if (count <= 0) return;
  const int64_t threads = at::get_num_threads();
  const int64_t chunk = std::max<int64_t>({1, min_chunk, (count + 8 * threads - 1) / (8 * threads)});
  const int64_t chunks = (count + chunk - 1) / chunk;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(chunks, threads), 1, [&](int64_t, int64_t) {
    auto scratch = make_scratch();
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1))
      body(c * chunk, std::min(count, (c + 1) * chunk), scratch);
  });
}

// The same without per-thread scratch: body(begin, end).
template <typename Body>
void parallel_chunks(int64_t count, int64_t min_chunk, const Body& body) {
  parallel_chunks(
      count, min_chunk, [] { return 0; }, [&](int64_t begin, int64_t end, int) { body(begin, end); });
}

// ---------------------------------------------------------------- ISA choice
// The instruction-set variants every kernel compiles, as V(NAME, target attribute, vector
// bytes): AVX-512 and AVX2 on x86 with GCC, and the baseline (16-byte vectors, no target)
// everywhere. One list, so that the kernels agree on each variant and none writes its own.
#if defined(__x86_64__) && defined(__GNUC__)
#define DCNV3_FOR_EACH_ISA(V)                                                    \
  V(avx512, __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))), 64) \
  V(avx2, __attribute__((target("avx2,fma"))), 32)                              \
  V(default, , 16)
#else
#define DCNV3_FOR_EACH_ISA(V) V(default, , 16)
#endif

// Calls NAME_avx512, NAME_avx2 or NAME_default (template arguments TARGS, possibly empty)
// as `isa` says: the one dispatch of every kernel.
#if defined(__x86_64__) && defined(__GNUC__)
#define DCNV3_CALL_ISA(isa, NAME, TARGS, ...)  \
  do {                                         \
    switch (isa) {                             \
      case Isa::kAvx512:                       \
        NAME##_avx512 TARGS(__VA_ARGS__);      \
        break;                                 \
      case Isa::kAvx2:                         \
        NAME##_avx2 TARGS(__VA_ARGS__);        \
        break;                                 \
      default:                                 \
        NAME##_default TARGS(__VA_ARGS__);     \
    }                                          \
  } while (0)
#else
#define DCNV3_CALL_ISA(isa, NAME, TARGS, ...) NAME##_default TARGS(__VA_ARGS__)
#endif

enum class Isa { kDefault, kAvx2, kAvx512 };

#if defined(__x86_64__) && defined(__GNUC__)
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

// The ISA a kernel runs: DCNV3_CPU_ISA where set (one this CPU has), else the widest the
// CPU has up to `preferred`. The gather kernels (DCNv3, MSDA) prefer AVX2: AVX-512 measured
// no faster there (Zen 4: bound by gathers and latency, not vector width), and 32-byte
// vectors suit the common group widths (16, 32 channels). Streaming kernels (LayerNorm:
// contiguous rows) prefer AVX-512: on an AVX-512 Xeon, float32 rows ran 12 % and bfloat16
// rows 40 % faster than with AVX2 (AVX2 has no one-instruction narrowing).
Isa active_isa(Isa preferred = Isa::kAvx2) {
  static const Isa supported = detect_isa();
  const char* forced = std::getenv("DCNV3_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return std::min(supported, preferred);
  const std::string name(forced);
  Isa want;
  if (name == "default") want = Isa::kDefault;
  else if (name == "avx2") want = Isa::kAvx2;
  else if (name == "avx512") want = Isa::kAvx512;
  else TORCH_CHECK(false, "DCNV3_CPU_ISA must be default, avx2 or avx512, got '", name, "'");
  TORCH_CHECK(static_cast<int>(want) <= static_cast<int>(supported), "DCNV3_CPU_ISA=", name,
              " is not supported by this CPU");
  return want;
}

}  // namespace
}  // namespace dcnv3
