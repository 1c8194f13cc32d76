// Per-point sampling math of multi-scale deformable attention (MSDA), built on the
// bilinear corner arithmetic of DCNv3 (dcnv3_sampling.h), so that both operators and all
// backends interpolate identically. Plain C++, usable from host and device code.
#pragma once

#include <cmath>
#include <cstdint>

#include "dcnv3_sampling.h"

namespace dcnv3 {
namespace msda {

// Sizes of one call (validated against each other before a kernel sees them).
struct Sizes {
  int64_t batch, keys, heads, head_dim;  // value (batch, keys, heads, head_dim)
  int64_t queries, levels, points;       // sampling_locations (batch, queries, heads, levels, points, 2)
};

DCNV3_HD bool is_finite(float v) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(v);
#else
  return std::isfinite(v);
#endif
}
DCNV3_HD bool is_finite(double v) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(v);
#else
  return std::isfinite(v);
#endif
}

// Bilinear neighbourhood of a normalised location (loc_x, loc_y) in [0, 1]^2 on a level
// of height x width. Pixel centres sit at integers: x = loc_x * width - 0.5, which is
// grid_sample(align_corners=False) at grid = 2 * loc - 1. Returns whether the location
// is finite.
//
// A non-finite coordinate follows grid_sample: no corner is read, the sample is NaN
// (the caller writes it), and the fractional part along that axis is NaN, so the
// gradient along the *other* axis (the one whose interpolation weights it enters) is
// NaN while its own, taken over four zero corners, is 0.
template <typename acc_t>
DCNV3_HD bool sample_location(acc_t loc_x, acc_t loc_y, int height, int width, Bilinear<acc_t>& b) {
  const acc_t x = loc_x * acc_t(width) - acc_t(0.5);
  const acc_t y = loc_y * acc_t(height) - acc_t(0.5);
  bilinear(y, x, height, width, b);
  const bool finite_x = is_finite(x), finite_y = is_finite(y);
  if (!(finite_x & finite_y)) {
    for (int k = 0; k < 4; ++k) {
      b.valid[k] = false;
      b.weight[k] = acc_t(0);
    }
    if (!finite_x) b.lx = acc_t(NAN);
    if (!finite_y) b.ly = acc_t(NAN);
  }
  return finite_x & finite_y;
}

// Gradients of attention * sample(loc) paired with grad_output, given d[k] = <grad_output,
// corner k> (0 for corners outside): with respect to the normalised location (x, y) and
// the attention weight. `finite` is what sample_location returned.
template <typename acc_t>
DCNV3_HD void location_and_attention_grads(const Bilinear<acc_t>& b, const acc_t d[4], acc_t attention,
                                           bool finite, int height, int width, acc_t& grad_loc_x,
                                           acc_t& grad_loc_y, acc_t& grad_attention) {
  acc_t grad_y, grad_x;
  location_and_mask_grads(b, d, attention, grad_y, grad_x, grad_attention);
  grad_loc_x = grad_x * acc_t(width);  // d x / d loc_x = width
  grad_loc_y = grad_y * acc_t(height);
  if (!finite) grad_attention = acc_t(NAN);  // the sample itself is NaN
}

}  // namespace msda
}  // namespace dcnv3
