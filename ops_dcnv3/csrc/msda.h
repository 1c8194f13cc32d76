// ATen-level helpers shared by the backend files of the ops_dcnv3::msda operator
// (multi-scale deformable attention).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "msda_sampling.h"

namespace dcnv3 {
namespace msda {

// One forward call, ready for a backend: contiguous operands (level tables as int64 on the
// value's device), and the output to fill.
struct ForwardCall {
  Sizes s;
  at::Tensor value, spatial_shapes, level_start_index, sampling_locations, attention_weights;
  at::Tensor output;  // (batch, queries, heads * head_dim)
};

// One backward call: as ForwardCall plus grad_output (in value's dtype), grad_value in the
// accumulation dtype (float32 for half types): zeroed, or left to the kernel where
// `writes_every_grad_value` (if given) says that it writes each element at these sizes;
// grad_sampling_locations and grad_attention_weights to fill.
struct BackwardCall {
  Sizes s;
  at::Tensor grad_output, value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights;
  at::Tensor grad_value, grad_sampling_locations, grad_attention_weights;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> gradients() const;
};

// Checks that make a kernel memory-safe (the Python wrapper gives friendlier errors first;
// these guard direct torch.ops calls), including the level table's values: each level at
// least 1x1, level_start_index the running sum of H*W, and their total the number of keys.
ForwardCall prepare_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                            const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                            const at::Tensor& attention_weights, int64_t im2col_step);
BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& value,
                              const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights, int64_t im2col_step,
                              bool (*writes_every_grad_value)(const Sizes&) = nullptr);

}  // namespace msda
}  // namespace dcnv3
