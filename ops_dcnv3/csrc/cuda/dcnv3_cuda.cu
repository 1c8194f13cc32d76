// CUDA backend of ops_dcnv3::dcnv3: ATen glue around dcnv3_cuda_kernel.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../dcnv3.h"
#include "dcnv3_cuda_kernel.cuh"

namespace dcnv3 {
namespace {

at::Tensor dcnv3_forward_cuda(const at::Tensor& input, const at::Tensor& offset,
                              const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS) {
  const c10::cuda::CUDAGuard guard(input.device());
  ForwardCall call = prepare_forward(input, offset, mask, DCNV3_GEOMETRY_ARGS);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, call.input.scalar_type(),
                                  "dcnv3_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((cuda::launch_forward<scalar_t, acc_t>(
        call.input.const_data_ptr<scalar_t>(), call.offset.const_data_ptr<scalar_t>(),
        call.mask.const_data_ptr<scalar_t>(), call.output.mutable_data_ptr<scalar_t>(), call.g,
        call.batch, stream)));
  });
  return call.output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const at::Tensor& mask, DCNV3_GEOMETRY_PARAMS) {
  const c10::cuda::CUDAGuard guard(input.device());
  BackwardCall call = prepare_backward(grad_output, input, offset, mask, DCNV3_GEOMETRY_ARGS);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, call.input.scalar_type(),
                                  "dcnv3_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((cuda::launch_backward<scalar_t, acc_t>(
        call.grad_output.const_data_ptr<scalar_t>(), call.input.const_data_ptr<scalar_t>(),
        call.offset.const_data_ptr<scalar_t>(), call.mask.const_data_ptr<scalar_t>(),
        call.grad_input.mutable_data_ptr<acc_t>(), call.grad_offset.mutable_data_ptr<scalar_t>(),
        call.grad_mask.mutable_data_ptr<scalar_t>(), call.g, call.batch, stream)));
  });
  return call.gradients();
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CUDA, m) {
  m.impl("dcnv3", &dcnv3::dcnv3_forward_cuda);
  m.impl("dcnv3_backward", &dcnv3::dcnv3_backward_cuda);
}
