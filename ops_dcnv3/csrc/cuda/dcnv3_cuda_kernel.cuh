// CUDA kernels of DCNv3 on raw pointers, with launchers that take a stream. Shared by
// the PyTorch extension (dcnv3_cuda.cu) and the TensorRT plugin (tensorrt/), so both
// run the same kernel source. scalar_t: float, double, __half, __nv_bfloat16 (or
// c10::Half / c10::BFloat16); acc_t: float (double for double).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../dcnv3_sampling.h"

namespace dcnv3 {
namespace cuda {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t work) {
  return static_cast<unsigned int>((work + kThreads - 1) / kThreads);
}

// One thread per output element (n, oy, ox, channel): neighbouring threads read
// neighbouring channels, so input loads coalesce; tap geometry is recomputed per
// thread (cheap ALU) instead of being staged in shared memory.
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ input,
                               const scalar_t* __restrict__ offset,
                               const scalar_t* __restrict__ mask,
                               scalar_t* __restrict__ output, Geometry g, int64_t total) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int channel = static_cast<int>(index % g.channels);
  const int64_t out_pixel = index / g.channels;  // n * Ho * Wo + oy * Wo + ox
  const int64_t pixels = int64_t(g.out_height) * g.out_width;
  const int64_t n = out_pixel / pixels;
  const int oy = static_cast<int>((out_pixel % pixels) / g.out_width);
  const int ox = static_cast<int>(out_pixel % g.out_width);
  const int grp = channel / g.group_channels;
  const scalar_t* image = input + n * int64_t(g.height) * g.width * g.channels + channel;
  const int64_t slot0 = out_pixel * g.group * g.points + int64_t(grp) * g.points;

  acc_t acc = 0;
  int p = 0;
  for (int i = 0; i < g.kernel_w; ++i) {
    for (int j = 0; j < g.kernel_h; ++j) {
      if (is_removed_center(g, i, j)) continue;
      const int64_t slot = slot0 + p++;
      acc_t y, x;
      tap_location<acc_t>(g, oy, ox, i, j, static_cast<acc_t>(offset[2 * slot]),
                          static_cast<acc_t>(offset[2 * slot + 1]), y, x);
      Bilinear<acc_t> b;
      bilinear(y, x, g.height, g.width, b);
      // 0 outside the image, NaN at a non-finite location (dcnv3_sampling.h); the mask
      // multiplies either way, as in the reference.
      acc_t value = location_poison(y, x);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (b.valid[k]) {
          value += b.weight[k] *
                   static_cast<acc_t>(image[int64_t(corner_pixel(b, k, g.width)) * g.channels]);
        }
      }
      acc += static_cast<acc_t>(mask[slot]) * value;
    }
  }
  output[index] = static_cast<scalar_t>(acc);
}

// One thread per tap (n, oy, ox, group, point): it owns that tap's offset and mask
// gradients (plain stores) and scatters into grad_input with atomics in acc_t.
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_output,
                                const scalar_t* __restrict__ input,
                                const scalar_t* __restrict__ offset,
                                const scalar_t* __restrict__ mask,
                                acc_t* __restrict__ grad_input,
                                scalar_t* __restrict__ grad_offset,
                                scalar_t* __restrict__ grad_mask, Geometry g, int64_t total) {
  const int64_t slot = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (slot >= total) return;
  const int point = static_cast<int>(slot % g.points);
  const int grp = static_cast<int>((slot / g.points) % g.group);
  const int64_t out_pixel = slot / (int64_t(g.points) * g.group);
  const int64_t pixels = int64_t(g.out_height) * g.out_width;
  const int64_t n = out_pixel / pixels;
  const int oy = static_cast<int>((out_pixel % pixels) / g.out_width);
  const int ox = static_cast<int>(out_pixel % g.out_width);

  // Recover the tap (i, j) of this point in the width-outer, height-inner order.
  int tap = point;
  if (g.remove_center && tap >= (g.kernel_w / 2) * g.kernel_h + g.kernel_h / 2) ++tap;
  const int i = tap / g.kernel_h, j = tap % g.kernel_h;

  acc_t y, x;
  tap_location<acc_t>(g, oy, ox, i, j, static_cast<acc_t>(offset[2 * slot]),
                      static_cast<acc_t>(offset[2 * slot + 1]), y, x);
  Bilinear<acc_t> b;
  const bool inside = bilinear(y, x, g.height, g.width, b);
  const acc_t m = static_cast<acc_t>(mask[slot]);
  const acc_t scale = static_cast<acc_t>(g.offset_scale);
  acc_t grad_y, grad_x, grad_m;
  if (!inside) {  // no corner: the gradients carry only the NaN semantics of the location
    const acc_t none[4] = {0, 0, 0, 0};
    location_and_mask_grads(b, none, m, grad_y, grad_x, grad_m);
    grad_offset[2 * slot] = static_cast<scalar_t>(grad_x * scale);
    grad_offset[2 * slot + 1] = static_cast<scalar_t>(grad_y * scale);
    grad_mask[slot] = static_cast<scalar_t>(grad_m);
    return;
  }
  const int64_t image_base =
      n * int64_t(g.height) * g.width * g.channels + int64_t(grp) * g.group_channels;
  const scalar_t* gout = grad_output + out_pixel * g.channels + int64_t(grp) * g.group_channels;
  int64_t corner_base[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    corner_base[k] = image_base + int64_t(corner_pixel(b, k, g.width)) * g.channels;

  acc_t d[4] = {0, 0, 0, 0};
  for (int c = 0; c < g.group_channels; ++c) {
    const acc_t go = static_cast<acc_t>(gout[c]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (!b.valid[k]) continue;
      d[k] += go * static_cast<acc_t>(input[corner_base[k] + c]);
      atomicAdd(grad_input + corner_base[k] + c, m * b.weight[k] * go);
    }
  }
  location_and_mask_grads(b, d, m, grad_y, grad_x, grad_m);
  grad_offset[2 * slot] = static_cast<scalar_t>(grad_x * scale);
  grad_offset[2 * slot + 1] = static_cast<scalar_t>(grad_y * scale);
  grad_mask[slot] = static_cast<scalar_t>(grad_m);
}

// output: (N, Ho, Wo, C), fully written.
template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                           scalar_t* output, const Geometry& g, int64_t batch,
                           cudaStream_t stream) {
  const int64_t total = batch * g.out_height * g.out_width * int64_t(g.channels);
  if (total == 0) return cudaSuccess;
  forward_kernel<scalar_t, acc_t>
      <<<blocks_for(total), kThreads, 0, stream>>>(input, offset, mask, output, g, total);
  return cudaGetLastError();
}

// grad_input must be zeroed by the caller (it is accumulated with atomics).
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* grad_output, const scalar_t* input,
                            const scalar_t* offset, const scalar_t* mask, acc_t* grad_input,
                            scalar_t* grad_offset, scalar_t* grad_mask, const Geometry& g,
                            int64_t batch, cudaStream_t stream) {
  const int64_t total = batch * g.out_height * g.out_width * int64_t(g.group) * g.points;
  if (total == 0) return cudaSuccess;
  backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
      grad_output, input, offset, mask, grad_input, grad_offset, grad_mask, g, total);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace dcnv3
