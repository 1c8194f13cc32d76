// The schema of the multi-scale deformable attention operator (ops_dcnv3::msda), beside
// DCNv3's in the same library. Backends register kernels in cpu/ and cuda/; autograd,
// fake kernels and the ONNX symbolic are registered from Python (ops_dcnv3/msda.py).
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "msda.h"

namespace dcnv3 {
namespace msda {
namespace {

Sizes check(const at::Tensor& value, const at::Tensor& spatial_shapes,
            const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
            const at::Tensor& attention_weights, int64_t im2col_step) {
  TORCH_CHECK(value.dim() == 4, "msda: value must be (batch, keys, heads, head_dim), got ", value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "msda: sampling_locations must be (batch, queries, heads, levels, points, 2), got ",
              sampling_locations.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "msda: spatial_shapes must be (levels, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(im2col_step >= 1, "msda: im2col_step must be >= 1, got ", im2col_step);
  Sizes s;
  s.batch = value.size(0);
  s.keys = value.size(1);
  s.heads = value.size(2);
  s.head_dim = value.size(3);
  s.queries = sampling_locations.size(1);
  s.levels = sampling_locations.size(3);
  s.points = sampling_locations.size(4);
  TORCH_CHECK(s.heads >= 1 && s.head_dim >= 1 && s.levels >= 1 && s.points >= 1,
              "msda: heads, head_dim, levels and points must be >= 1");
  TORCH_CHECK(sampling_locations.size(0) == s.batch && sampling_locations.size(2) == s.heads,
              "msda: sampling_locations ", sampling_locations.sizes(),
              " does not match value's batch and heads ", value.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "msda: attention_weights must be ", sampling_locations.sizes().slice(0, 5), ", got ",
              attention_weights.sizes());
  TORCH_CHECK(spatial_shapes.size(0) == s.levels && level_start_index.dim() == 1 &&
                  level_start_index.size(0) == s.levels,
              "msda: spatial_shapes ", spatial_shapes.sizes(), " and level_start_index ",
              level_start_index.sizes(), " must describe the ", s.levels, " levels of sampling_locations");
  TORCH_CHECK(value.is_floating_point() && sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "msda: value, sampling_locations and attention_weights must share a floating dtype");
  TORCH_CHECK(!at::isFloatingType(spatial_shapes.scalar_type()) &&
                  !at::isFloatingType(level_start_index.scalar_type()),
              "msda: spatial_shapes and level_start_index must be integer tensors");
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->device() == value.device(), "msda: every tensor must be on value's device ",
                value.device(), ", got one on ", t->device());
  }
  // The level table's values decide every address a kernel reads: check them on the host.
  const at::Tensor shapes = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor starts = level_start_index.to(at::kCPU, at::kLong).contiguous();
  const int64_t* hw = shapes.const_data_ptr<int64_t>();
  const int64_t* start = starts.const_data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < s.levels; ++l) {
    TORCH_CHECK(hw[2 * l] >= 1 && hw[2 * l + 1] >= 1 && hw[2 * l] < (int64_t(1) << 31) / hw[2 * l + 1],
                "msda: level ", l, " has spatial shape ", hw[2 * l], "x", hw[2 * l + 1]);
    TORCH_CHECK(start[l] == total, "msda: level_start_index[", l, "] is ", start[l],
                " but the levels before it hold ", total, " keys");
    total += hw[2 * l] * hw[2 * l + 1];
  }
  TORCH_CHECK(total == s.keys, "msda: spatial_shapes hold ", total, " keys but value has ", s.keys);
  return s;
}

}  // namespace

ForwardCall prepare_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                            const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                            const at::Tensor& attention_weights, int64_t im2col_step) {
  ForwardCall call;
  call.s = check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step);
  call.value = value.contiguous();
  call.spatial_shapes = spatial_shapes.to(at::kLong).contiguous();
  call.level_start_index = level_start_index.to(at::kLong).contiguous();
  call.sampling_locations = sampling_locations.contiguous();
  call.attention_weights = attention_weights.contiguous();
  call.output = at::empty({call.s.batch, call.s.queries, call.s.heads * call.s.head_dim}, call.value.options());
  return call;
}

BackwardCall prepare_backward(const at::Tensor& grad_output, const at::Tensor& value,
                              const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights, int64_t im2col_step,
                              bool (*writes_every_grad_value)(const Sizes&)) {
  BackwardCall call;
  call.s = check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step);
  const Sizes& s = call.s;
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({s.batch, s.queries, s.heads * s.head_dim}),
              "msda_backward: grad_output has shape ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == value.device(), "msda_backward: grad_output must be on value's device");
  call.grad_output = grad_output.to(value.scalar_type()).contiguous();
  call.value = value.contiguous();
  call.spatial_shapes = spatial_shapes.to(at::kLong).contiguous();
  call.level_start_index = level_start_index.to(at::kLong).contiguous();
  call.sampling_locations = sampling_locations.contiguous();
  call.attention_weights = attention_weights.contiguous();
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  const auto grad_options = call.value.options().dtype(acc_dtype);
  call.grad_value = writes_every_grad_value && writes_every_grad_value(s) ? at::empty(value.sizes(), grad_options)
                                                                          : at::zeros(value.sizes(), grad_options);
  call.grad_sampling_locations = at::empty_like(call.sampling_locations);
  call.grad_attention_weights = at::empty_like(call.attention_weights);
  return call;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> BackwardCall::gradients() const {
  return {grad_value.to(value.scalar_type()), grad_sampling_locations, grad_attention_weights};
}

}  // namespace msda
}  // namespace dcnv3

TORCH_LIBRARY_FRAGMENT(ops_dcnv3, m) {
  m.def(
      "msda(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, int im2col_step) -> Tensor");
  m.def(
      "msda_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "int im2col_step) -> (Tensor, Tensor, Tensor)");
}
