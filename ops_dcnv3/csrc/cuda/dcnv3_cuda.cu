// CUDA backend of ops_dcnv3::dcnv3: ATen glue around dcnv3_cuda_kernel.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../dcnv3.h"
#include "dcnv3_cuda_kernel.cuh"

namespace dcnv3 {
namespace {

at::Tensor dcnv3_forward_cuda(const at::Tensor& input_, const at::Tensor& offset_,
                              const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h,
                              int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                              int64_t group, int64_t group_channels, double offset_scale,
                              int64_t im2col_step, bool remove_center) {
  const Geometry g = make_geometry(input_, offset_, mask_, DCNV3_GEOMETRY_ARGS);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(),
                   mask = mask_.contiguous();
  const int64_t batch = input.size(0);
  at::Tensor output =
      at::empty({batch, g.out_height, g.out_width, g.channels}, input.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                  "dcnv3_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((cuda::launch_forward<scalar_t, acc_t>(
        input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
        mask.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), g, batch,
        stream)));
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_,
    const at::Tensor& mask_, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale, int64_t im2col_step,
    bool remove_center) {
  const Geometry g = make_geometry(input_, offset_, mask_, DCNV3_GEOMETRY_ARGS);
  const c10::cuda::CUDAGuard guard(input_.device());
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
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                  "dcnv3_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    C10_CUDA_CHECK((cuda::launch_backward<scalar_t, acc_t>(
        grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
        offset.const_data_ptr<scalar_t>(), mask.const_data_ptr<scalar_t>(),
        grad_input.mutable_data_ptr<acc_t>(), grad_offset.mutable_data_ptr<scalar_t>(),
        grad_mask.mutable_data_ptr<scalar_t>(), g, batch, stream)));
  });
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace
}  // namespace dcnv3

TORCH_LIBRARY_IMPL(ops_dcnv3, CUDA, m) {
  m.impl("dcnv3", &dcnv3::dcnv3_forward_cuda);
  m.impl("dcnv3_backward", &dcnv3::dcnv3_backward_cuda);
}
