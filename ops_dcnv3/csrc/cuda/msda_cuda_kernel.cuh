// CUDA kernels of multi-scale deformable attention on raw pointers, with launchers that
// take a stream (usable outside PyTorch too, like dcnv3_cuda_kernel.cuh). scalar_t: float,
// double, half types; acc_t: float (double for double). The level table (spatial_shapes,
// level_start_index) is int64 in device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../msda_sampling.h"

namespace dcnv3 {
namespace msda {
namespace cuda {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t work) {
  return static_cast<unsigned int>((work + kThreads - 1) / kThreads);
}

// One thread per output element (b, q, h, channel): neighbouring threads read neighbouring
// channels of a corner, so value loads coalesce; the point geometry is recomputed per
// thread (cheap ALU) instead of being staged in shared memory.
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
                               const int64_t* __restrict__ level_start_index,
                               const scalar_t* __restrict__ sampling_locations,
                               const scalar_t* __restrict__ attention_weights, scalar_t* __restrict__ output,
                               Sizes s, int64_t total) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t channel = index % s.head_dim;
  const int64_t bqh = index / s.head_dim;  // (b * queries + q) * heads + h
  const int64_t h = bqh % s.heads;
  const int64_t b = bqh / (s.heads * s.queries);
  const int64_t key_stride = s.heads * s.head_dim;
  const int64_t point0 = bqh * s.levels * s.points;
  acc_t acc = 0;
  bool finite = true;
  for (int64_t l = 0; l < s.levels; ++l) {
    const int height = static_cast<int>(spatial_shapes[2 * l]);
    const int width = static_cast<int>(spatial_shapes[2 * l + 1]);
    const scalar_t* level = value + ((b * s.keys + level_start_index[l]) * s.heads + h) * s.head_dim + channel;
    for (int64_t p = 0; p < s.points; ++p) {
      const int64_t point = point0 + l * s.points + p;
      Bilinear<acc_t> bl;
      finite &= sample_location(static_cast<acc_t>(sampling_locations[2 * point]),
                                static_cast<acc_t>(sampling_locations[2 * point + 1]), height, width, bl);
      acc_t sample = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (bl.valid[k]) {
          sample += bl.weight[k] * static_cast<acc_t>(level[int64_t(corner_pixel(bl, k, width)) * key_stride]);
        }
      }
      acc += static_cast<acc_t>(attention_weights[point]) * sample;
    }
  }
  output[index] = static_cast<scalar_t>(finite ? acc : acc_t(NAN));
}

// One thread per sampling point (b, q, h, l, p): it owns that point's location and
// attention gradients (plain stores) and scatters into grad_value with atomics in acc_t.
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ spatial_shapes,
                                const int64_t* __restrict__ level_start_index,
                                const scalar_t* __restrict__ sampling_locations,
                                const scalar_t* __restrict__ attention_weights, acc_t* __restrict__ grad_value,
                                scalar_t* __restrict__ grad_sampling_locations,
                                scalar_t* __restrict__ grad_attention_weights, Sizes s, int64_t total) {
  const int64_t point = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (point >= total) return;
  const int64_t l = (point / s.points) % s.levels;
  const int64_t bqh = point / (s.points * s.levels);
  const int64_t h = bqh % s.heads;
  const int64_t b = bqh / (s.heads * s.queries);
  const int height = static_cast<int>(spatial_shapes[2 * l]);
  const int width = static_cast<int>(spatial_shapes[2 * l + 1]);
  const int64_t key_stride = s.heads * s.head_dim;
  Bilinear<acc_t> bl;
  const bool finite = sample_location(static_cast<acc_t>(sampling_locations[2 * point]),
                                      static_cast<acc_t>(sampling_locations[2 * point + 1]), height, width, bl);
  const acc_t attention = static_cast<acc_t>(attention_weights[point]);
  const int64_t level_offset = ((b * s.keys + level_start_index[l]) * s.heads + h) * s.head_dim;
  int64_t corner[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) corner[k] = level_offset + int64_t(corner_pixel(bl, k, width)) * key_stride;
  const scalar_t* gout = grad_output + bqh * s.head_dim;
  acc_t d[4] = {0, 0, 0, 0};
  for (int64_t c = 0; c < s.head_dim; ++c) {
    const acc_t go = static_cast<acc_t>(gout[c]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (!bl.valid[k]) continue;
      d[k] += go * static_cast<acc_t>(value[corner[k] + c]);
      atomicAdd(grad_value + corner[k] + c, attention * bl.weight[k] * go);
    }
  }
  acc_t grad_x, grad_y, grad_attention;
  location_and_attention_grads(bl, d, attention, finite, height, width, grad_x, grad_y, grad_attention);
  grad_sampling_locations[2 * point] = static_cast<scalar_t>(grad_x);
  grad_sampling_locations[2 * point + 1] = static_cast<scalar_t>(grad_y);
  grad_attention_weights[point] = static_cast<scalar_t>(grad_attention);
}

// output: (batch, queries, heads * head_dim), fully written.
template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                           const scalar_t* sampling_locations, const scalar_t* attention_weights,
                           scalar_t* output, const Sizes& s, cudaStream_t stream) {
  const int64_t total = s.batch * s.queries * s.heads * s.head_dim;
  if (total == 0) return cudaSuccess;
  forward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output, s, total);
  return cudaGetLastError();
}

// grad_value must be zeroed by the caller (it is accumulated with atomics).
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* grad_output, const scalar_t* value, const int64_t* spatial_shapes,
                            const int64_t* level_start_index, const scalar_t* sampling_locations,
                            const scalar_t* attention_weights, acc_t* grad_value,
                            scalar_t* grad_sampling_locations, scalar_t* grad_attention_weights,
                            const Sizes& s, cudaStream_t stream) {
  const int64_t total = s.batch * s.queries * s.heads * s.levels * s.points;
  if (total == 0) return cudaSuccess;
  backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
      grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_value,
      grad_sampling_locations, grad_attention_weights, s, total);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace msda
}  // namespace dcnv3
