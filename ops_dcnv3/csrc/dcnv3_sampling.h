// Per-tap sampling math of DCNv3, shared by the CPU kernels, the CUDA kernels and the
// TensorRT plugin so that every backend computes exactly the same locations/weights.
// Plain C++ (no ATen), usable from host and device code.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DCNV3_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define DCNV3_HD inline __attribute__((always_inline))
#else
#define DCNV3_HD inline
#endif

#include <cmath>

namespace dcnv3 {

// Static geometry of one call; every field is validated before a kernel sees it.
struct Geometry {
  int height, width, channels;      // input H, W, C
  int out_height, out_width;        // Ho, Wo
  int group, group_channels;        // C = group * group_channels
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int points;                       // P = kernel_h * kernel_w - remove_center
  bool remove_center;
  double offset_scale;  // kept in double: float64 calls must not round it
};

// Taps run width-index outer, height-index inner; `skip` says the tap is the removed
// centre (remove_center), so it has no offset/mask slot.
DCNV3_HD bool is_removed_center(const Geometry& g, int i, int j) {
  return g.remove_center && i == g.kernel_w / 2 && j == g.kernel_h / 2;
}

// Bilinear neighbourhood of one sampling location. Corner k: 0=(y0,x0) 1=(y0,x0+1)
// 2=(y0+1,x0) 3=(y0+1,x0+1). Corners outside the image have weight 0 and valid false.
template <typename acc_t>
struct Bilinear {
  int y0, x0;
  acc_t ly, lx;        // fractional parts
  acc_t weight[4];
  bool valid[4];
};

// Regular-grid displacement of tap (i, j) from the window centre, in input pixels.
DCNV3_HD int tap_dx(const Geometry& g, int i) { return i * g.dilation_w - g.dilation_w * (g.kernel_w - 1) / 2; }
DCNV3_HD int tap_dy(const Geometry& g, int j) { return j * g.dilation_h - g.dilation_h * (g.kernel_h - 1) / 2; }

// Window centre of output pixel (oy, ox) in input pixel coordinates.
DCNV3_HD int centre_x(const Geometry& g, int ox) {
  return ox * g.stride_w - g.pad_w + g.dilation_w * (g.kernel_w - 1) / 2;
}
DCNV3_HD int centre_y(const Geometry& g, int oy) {
  return oy * g.stride_h - g.pad_h + g.dilation_h * (g.kernel_h - 1) / 2;
}

// Sampling location: centre + (regular displacement + learned offset) * offset_scale.
template <typename acc_t>
DCNV3_HD acc_t sample_coordinate(acc_t centre, acc_t displacement, acc_t offset, acc_t scale) {
  return centre + (displacement + offset) * scale;
}

// Location of tap (i, j) at output pixel (oy, ox) with learned offset (dx, dy).
template <typename acc_t>
DCNV3_HD void tap_location(const Geometry& g, int oy, int ox, int i, int j, acc_t dx,
                           acc_t dy, acc_t& y, acc_t& x) {
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  x = sample_coordinate(acc_t(centre_x(g, ox)), acc_t(tap_dx(g, i)), dx, scale);
  y = sample_coordinate(acc_t(centre_y(g, oy)), acc_t(tap_dy(g, j)), dy, scale);
}

DCNV3_HD float floor_of(float v) {
#if defined(__CUDA_ARCH__)
  return floorf(v);
#else
  return std::floor(v);
#endif
}
DCNV3_HD double floor_of(double v) {
#if defined(__CUDA_ARCH__)
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

// NaN/inf semantics (every backend, as the reference's grid_sample): a location with a
// NaN or infinite coordinate (NaN/inf offset, or an overflow) samples NaN in every
// channel, so the output and that tap's mask gradient are NaN; the offset gradient of x
// is NaN when y is not finite and the other way round (d/dx of the bilinear sample goes
// through the y fractions), and the input gets no gradient from the tap. A finite
// location outside the image samples 0; its mask still multiplies (0 * NaN mask = NaN).
// A diverging run therefore shows NaN instead of hiding behind a finite loss.

// 0 for a finite location, NaN otherwise (v - v is NaN exactly for NaN and +-inf).
template <typename acc_t>
DCNV3_HD acc_t location_poison(acc_t y, acc_t x) {
  return (y - y) + (x - x);
}

// Bilinear neighbourhood of (y, x), branch-free (bitwise &, selects) so the CPU kernels
// vectorise it over taps. A location outside (-1, H) x (-1, W), NaN included since
// every comparison with NaN is false, gets no valid corner; returns whether it is inside.
// The fractions ly/lx come from the unclamped location, so they are NaN/inf exactly when
// the coordinate is (see the NaN/inf semantics above); for an inside location they are
// the usual ones in [0, 1).
template <typename acc_t>
DCNV3_HD bool bilinear(acc_t y, acc_t x, int height, int width, Bilinear<acc_t>& b) {
  const bool inside = (y > acc_t(-1)) & (x > acc_t(-1)) & (y < acc_t(height)) & (x < acc_t(width));
  // Clamp (NaN goes to -2) so the int conversion is defined; inside points are unchanged.
  // Clamping rather than selecting on `inside` keeps the compiler from branching here.
  acc_t ys = y > acc_t(-2) ? y : acc_t(-2), xs = x > acc_t(-2) ? x : acc_t(-2);
  ys = ys < acc_t(height) ? ys : acc_t(height);
  xs = xs < acc_t(width) ? xs : acc_t(width);
  const acc_t y0f = floor_of(ys), x0f = floor_of(xs);
  const int y0 = static_cast<int>(y0f), x0 = static_cast<int>(x0f);
  b.y0 = y0;
  b.x0 = x0;
  b.ly = y - y0f;
  b.lx = x - x0f;
  const acc_t hy = acc_t(1) - b.ly, hx = acc_t(1) - b.lx;
  const bool top = inside & (y0 >= 0), bottom = inside & (y0 + 1 < height);
  const bool left = x0 >= 0, right = x0 + 1 < width;
  b.valid[0] = top & left;
  b.valid[1] = top & right;
  b.valid[2] = bottom & left;
  b.valid[3] = bottom & right;
  b.weight[0] = b.valid[0] ? hy * hx : acc_t(0);
  b.weight[1] = b.valid[1] ? hy * b.lx : acc_t(0);
  b.weight[2] = b.valid[2] ? b.ly * hx : acc_t(0);
  b.weight[3] = b.valid[3] ? b.ly * b.lx : acc_t(0);
  return inside;
}

// Pixel index (y * W + x) of corner k.
template <typename acc_t>
DCNV3_HD int corner_pixel(const Bilinear<acc_t>& b, int k, int width) {
  return (b.y0 + (k >> 1)) * width + b.x0 + (k & 1);
}

// Given d[k] = <grad_out, input at corner k> (0 for invalid corners), the gradients of
// <grad_out, mask * sample> with respect to the location (before offset_scale) and the
// mask. The sample is bilinear: value = sum_k weight_k * corner_k (NaN for a non-finite
// location: grad_mask gets the poison, grad_x/grad_y the NaN fractions).
template <typename acc_t>
DCNV3_HD void location_and_mask_grads(const Bilinear<acc_t>& b, const acc_t d[4], acc_t mask,
                                      acc_t& grad_y, acc_t& grad_x, acc_t& grad_mask) {
  const acc_t hy = acc_t(1) - b.ly, hx = acc_t(1) - b.lx;
  grad_x = mask * (hy * (d[1] - d[0]) + b.ly * (d[3] - d[2]));
  grad_y = mask * (hx * (d[2] - d[0]) + b.lx * (d[3] - d[1]));
  grad_mask = b.weight[0] * d[0] + b.weight[1] * d[1] + b.weight[2] * d[2] + b.weight[3] * d[3] +
              location_poison(b.ly, b.lx);
}

}  // namespace dcnv3
