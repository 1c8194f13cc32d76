// CPU kernels of ops_dcnv3::dcnv3 (float64, float32, bfloat16, float16; half types
// accumulate in float32).
//
// Forward: parallel over output pixels, each writing its own C outputs.
// Backward: parallel over (image, group) pairs. Every write of a task (the group's
// channels of that image's grad_input, and the group's offset/mask slots) belongs to
// that task alone, so there are no atomics and the result is deterministic.
// Inner loops run over a group's contiguous channels and are left to the compiler's
// vectoriser (-O3, restrict pointers, no aliasing through the loop).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "../dcnv3.h"

namespace dcnv3 {
namespace {

template <typename scalar_t, typename acc_t>
inline void axpy(acc_t* __restrict out, acc_t alpha, const scalar_t* __restrict x, int n) {
  for (int c = 0; c < n; ++c) out[c] += alpha * static_cast<acc_t>(x[c]);
}

template <typename scalar_t, typename acc_t>
inline acc_t dot(const acc_t* __restrict a, const scalar_t* __restrict x, int n) {
  acc_t s = 0;
  for (int c = 0; c < n; ++c) s += a[c] * static_cast<acc_t>(x[c]);
  return s;
}

template <typename scalar_t>
void forward_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                    scalar_t* output, const Geometry& g, int64_t batch) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixels = int64_t(g.out_height) * g.out_width;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  const int gc = g.group_channels;
  at::parallel_for(0, batch * pixels, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(g.channels);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / pixels;
      const int oy = static_cast<int>((index % pixels) / g.out_width);
      const int ox = static_cast<int>(index % g.out_width);
      const scalar_t* image = input + n * image_stride;
      const scalar_t* off = offset + index * g.group * g.points * 2;
      const scalar_t* msk = mask + index * g.group * g.points;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int grp = 0; grp < g.group; ++grp) {
        acc_t* acc_g = acc.data() + grp * gc;
        const scalar_t* image_g = image + grp * gc;
        int p = 0;
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
              axpy(acc_g, m * b.weight[k],
                   image_g + int64_t(corner_pixel(b, k, g.width)) * g.channels, gc);
            }
          }
        }
      }
      scalar_t* out = output + index * g.channels;
      for (int c = 0; c < g.channels; ++c) out[c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_output, const scalar_t* input,
                     const scalar_t* offset, const scalar_t* mask,
                     at::opmath_type<scalar_t>* grad_input, scalar_t* grad_offset,
                     scalar_t* grad_mask, const Geometry& g, int64_t batch) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pixels = int64_t(g.out_height) * g.out_width;
  const int64_t image_stride = int64_t(g.height) * g.width * g.channels;
  const int gc = g.group_channels;
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  at::parallel_for(0, batch * g.group, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> go(gc);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.group;
      const int grp = static_cast<int>(task % g.group);
      const scalar_t* image_g = input + n * image_stride + grp * gc;
      acc_t* grad_image_g = grad_input + n * image_stride + grp * gc;
      for (int64_t pix = 0; pix < pixels; ++pix) {
        const int64_t index = n * pixels + pix;
        const int oy = static_cast<int>(pix / g.out_width);
        const int ox = static_cast<int>(pix % g.out_width);
        const scalar_t* gout = grad_output + index * g.channels + grp * gc;
        for (int c = 0; c < gc; ++c) go[c] = static_cast<acc_t>(gout[c]);
        const int64_t slot0 = index * g.group * g.points + int64_t(grp) * g.points;
        int p = 0;
        for (int i = 0; i < g.kernel_w; ++i) {
          for (int j = 0; j < g.kernel_h; ++j) {
            if (is_removed_center(g, i, j)) continue;
            const int64_t slot = slot0 + p++;
            acc_t y, x;
            tap_location<acc_t>(g, oy, ox, i, j, static_cast<acc_t>(offset[2 * slot]),
                                static_cast<acc_t>(offset[2 * slot + 1]), y, x);
            Bilinear<acc_t> b;
            if (!make_bilinear(y, x, g.height, g.width, b)) {
              grad_offset[2 * slot] = grad_offset[2 * slot + 1] = scalar_t(0);
              grad_mask[slot] = scalar_t(0);
              continue;
            }
            const acc_t m = static_cast<acc_t>(mask[slot]);
            acc_t d[4] = {0, 0, 0, 0};
            for (int k = 0; k < 4; ++k) {
              if (!b.valid[k]) continue;
              const int64_t pixel_offset = int64_t(corner_pixel(b, k, g.width)) * g.channels;
              d[k] = dot(go.data(), image_g + pixel_offset, gc);
              axpy(grad_image_g + pixel_offset, m * b.weight[k], go.data(), gc);
            }
            acc_t grad_y, grad_x, grad_m;
            location_and_mask_grads(b, d, m, grad_y, grad_x, grad_m);
            grad_offset[2 * slot] = static_cast<scalar_t>(grad_x * scale);
            grad_offset[2 * slot + 1] = static_cast<scalar_t>(grad_y * scale);
            grad_mask[slot] = static_cast<scalar_t>(grad_m);
          }
        }
      }
    }
  });
}

at::Tensor dcnv3_forward_cpu(const at::Tensor& input_, const at::Tensor& offset_,
                             const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h,
                             int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                             int64_t group, int64_t group_channels, double offset_scale,
                             int64_t im2col_step, bool remove_center) {
  const Geometry g = make_geometry(input_, offset_, mask_, DCNV3_GEOMETRY_ARGS);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(),
                   mask = mask_.contiguous();
  const int64_t batch = input.size(0);
  at::Tensor output =
      at::empty({batch, g.out_height, g.out_width, g.channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                  "dcnv3_forward_cpu", [&] {
    forward_kernel<scalar_t>(input.const_data_ptr<scalar_t>(),
                             offset.const_data_ptr<scalar_t>(),
                             mask.const_data_ptr<scalar_t>(),
                             output.mutable_data_ptr<scalar_t>(), g, batch);
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
  const at::Tensor grad_output = grad_output_.to(input_.scalar_type()).contiguous();
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(),
                   mask = mask_.contiguous();
  const auto acc_dtype = at::toOpMathType(input.scalar_type());
  at::Tensor grad_input = at::zeros(input.sizes(), input.options().dtype(acc_dtype));
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = at::empty_like(mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                  "dcnv3_backward_cpu", [&] {
    backward_kernel<scalar_t>(
        grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
        offset.const_data_ptr<scalar_t>(), mask.const_data_ptr<scalar_t>(),
        grad_input.mutable_data_ptr<at::opmath_type<scalar_t>>(),
        grad_offset.mutable_data_ptr<scalar_t>(), grad_mask.mutable_data_ptr<scalar_t>(), g,
        batch);
  });
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3", &dcnv3::dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3::dcnv3_backward_cpu);
}
