// CUDA backend of ops_dcnv3::msda: ATen glue around msda_cuda_kernel.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../msda.h"
#include "msda_cuda_kernel.cuh"

namespace dcnv3 {
namespace msda {
namespace {

at::Tensor msda_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                             const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                             const at::Tensor& attention_weights, int64_t im2col_step) {
  const c10::cuda::CUDAGuard guard(value.device());
  ForwardCall call = prepare_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, call.value.scalar_type(), "msda_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((cuda::launch_forward<scalar_t, acc_t>(
        call.value.const_data_ptr<scalar_t>(), call.spatial_shapes.const_data_ptr<int64_t>(),
        call.level_start_index.const_data_ptr<int64_t>(), call.sampling_locations.const_data_ptr<scalar_t>(),
        call.attention_weights.const_data_ptr<scalar_t>(), call.output.mutable_data_ptr<scalar_t>(), call.s,
        stream)));
  });
  return call.output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> msda_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, int64_t im2col_step) {
  const c10::cuda::CUDAGuard guard(value.device());
  BackwardCall call = prepare_backward(grad_output, value, spatial_shapes, level_start_index,
                                       sampling_locations, attention_weights, im2col_step);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, call.value.scalar_type(), "msda_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((cuda::launch_backward<scalar_t, acc_t>(
        call.grad_output.const_data_ptr<scalar_t>(), call.value.const_data_ptr<scalar_t>(),
        call.spatial_shapes.const_data_ptr<int64_t>(), call.level_start_index.const_data_ptr<int64_t>(),
        call.sampling_locations.const_data_ptr<scalar_t>(), call.attention_weights.const_data_ptr<scalar_t>(),
        call.grad_value.mutable_data_ptr<acc_t>(), call.grad_sampling_locations.mutable_data_ptr<scalar_t>(),
        call.grad_attention_weights.mutable_data_ptr<scalar_t>(), call.s, stream)));
  });
  return call.gradients();
}

}  // namespace
}  // namespace msda
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CUDA, m) {
  m.impl("msda", &dcnv3::msda::msda_forward_cuda);
  m.impl("msda_backward", &dcnv3::msda::msda_backward_cuda);
}
