// ATen-level helpers shared by the backend files of the ops_dcnv3::dcnv3 operator.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <tuple>

#include "dcnv3_sampling.h"

// The scalar arguments of the schema, in order, for passing them on.
#define DCNV3_GEOMETRY_ARGS                                                             \
  kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, \
      group_channels, offset_scale, im2col_step, remove_center

#define DCNV3_GEOMETRY_PARAMS                                                                 \
  int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,      \
      int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,                   \
      int64_t group_channels, double offset_scale, int64_t im2col_step, bool remove_center

namespace dcnv3 {

// Checks that make a kernel memory-safe (the Python wrapper gives friendlier errors
// first; these guard direct torch.ops calls) and returns the call's geometry.
Geometry make_geometry(const at::Tensor& input, const at::Tensor& offset,
                       const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS);

// One forward call, ready for a backend: checked geometry, contiguous operands and the
// output to fill.
struct ForwardCall {
  Geometry g;
  int64_t batch;
  at::Tensor input, offset, mask, output;
};

// One backward call: contiguous operands (grad_output in the input's dtype), grad_input
// zeroed in the accumulation dtype (float32 for half types), grad_offset/grad_mask to fill.
struct BackwardCall {
  Geometry g;
  int64_t batch;
  at::Tensor grad_output, input, offset, mask, grad_input, grad_offset, grad_mask;
  // grad_input back in the input's dtype, with the other two gradients.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> gradients() const;
};

ForwardCall prepare_forward(const at::Tensor& input, const at::Tensor& offset,
                            const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS);
BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& offset, const at::Tensor& mask,
                              DCNV3_GEOMETRY_PARAMS);

}  // namespace dcnv3
