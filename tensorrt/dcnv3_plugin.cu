// Implementation of the TensorRT plugin TRTDCNv3 (see dcnv3_plugin.h). The kernel is
// NOT duplicated here: enqueue calls dcnv3::cuda::launch_forward from the header the
// PyTorch extension compiles too.
#include "dcnv3_plugin.h"

#include <cuda_fp16.h>

#include <cstdio>
#include <cstring>

#include "../ops_dcnv3/csrc/cuda/dcnv3_cuda_kernel.cuh"

namespace dcnv3 {
namespace trt {
namespace {

constexpr const char* kPluginName = "TRTDCNv3";
constexpr const char* kPluginVersion = "1";

void log_error(const char* message) { std::fprintf(stderr, "[TRTDCNv3] error: %s\n", message); }

// One table of the integer attributes, so that parsing and serialising cannot drift.
struct IntField {
  const char* name;
  int32_t Attributes::*member;
};
constexpr IntField kIntFields[] = {
    {"kernel_h", &Attributes::kernel_h},         {"kernel_w", &Attributes::kernel_w},
    {"stride_h", &Attributes::stride_h},         {"stride_w", &Attributes::stride_w},
    {"pad_h", &Attributes::pad_h},               {"pad_w", &Attributes::pad_w},
    {"dilation_h", &Attributes::dilation_h},     {"dilation_w", &Attributes::dilation_w},
    {"group", &Attributes::group},               {"group_channels", &Attributes::group_channels},
    {"im2col_step", &Attributes::im2col_step},   {"remove_center", &Attributes::remove_center},
};

// The ONNX parser passes ints as kINT32 (mmdeploy's converter may use kINT64) and
// floats as kFLOAT32; accept the wider types too.
bool read_int(const nvinfer1::PluginField& f, int32_t& value) {
  if (f.data == nullptr || f.length < 1) return false;
  switch (f.type) {
    case nvinfer1::PluginFieldType::kINT32: value = *static_cast<const int32_t*>(f.data); return true;
    case nvinfer1::PluginFieldType::kINT64: value = static_cast<int32_t>(*static_cast<const int64_t*>(f.data)); return true;
    default: return false;
  }
}

bool read_float(const nvinfer1::PluginField& f, float& value) {
  if (f.data == nullptr || f.length < 1) return false;
  switch (f.type) {
    case nvinfer1::PluginFieldType::kFLOAT32: value = *static_cast<const float*>(f.data); return true;
    case nvinfer1::PluginFieldType::kFLOAT64: value = static_cast<float>(*static_cast<const double*>(f.data)); return true;
    default: return false;
  }
}

bool valid(const Attributes& a) {
  if (a.kernel_h < 1 || a.kernel_w < 1 || a.stride_h < 1 || a.stride_w < 1 || a.dilation_h < 1 ||
      a.dilation_w < 1 || a.group < 1 || a.group_channels < 1 || a.pad_h < 0 || a.pad_w < 0) {
    log_error("kernel, stride, dilation, group, group_channels must be >= 1 and pads >= 0");
    return false;
  }
  if (a.remove_center && (a.kernel_h % 2 == 0 || a.kernel_w % 2 == 0)) {
    log_error("remove_center needs an odd kernel");
    return false;
  }
  return true;
}

}  // namespace

DCNv3Plugin::DCNv3Plugin(const Attributes& attrs) : attrs_(attrs) {}

nvinfer1::IPluginCapability* DCNv3Plugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* DCNv3Plugin::clone() noexcept {
  auto* plugin = new (std::nothrow) DCNv3Plugin(attrs_);
  if (plugin != nullptr) plugin->setPluginNamespace(namespace_.c_str());
  return plugin;
}

const char* DCNv3Plugin::getPluginName() const noexcept { return kPluginName; }
const char* DCNv3Plugin::getPluginVersion() const noexcept { return kPluginVersion; }
const char* DCNv3Plugin::getPluginNamespace() const noexcept { return namespace_.c_str(); }

int32_t DCNv3Plugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                                        const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept {
  if (nbInputs != 3 || nbOutputs != 1) return -1;
  outputTypes[0] = inputTypes[0];
  return 0;
}

int32_t DCNv3Plugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                     const nvinfer1::DimsExprs*, int32_t, nvinfer1::DimsExprs* outputs,
                                     int32_t nbOutputs, nvinfer1::IExprBuilder&) noexcept {
  if (nbInputs != 3 || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[1].nbDims != 4) return -1;
  // (N, Ho, Wo, C): Ho and Wo are the offset's spatial dims (the module computes the
  // offset on the output grid), C is the input's.
  outputs[0].nbDims = 4;
  outputs[0].d[0] = inputs[0].d[0];
  outputs[0].d[1] = inputs[1].d[1];
  outputs[0].d[2] = inputs[1].d[2];
  outputs[0].d[3] = inputs[0].d[3];
  return 0;
}

bool DCNv3Plugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                            int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos >= 4) return false;
  const auto& desc = inOut[pos].desc;
  if (desc.format != nvinfer1::TensorFormat::kLINEAR) return false;
  if (pos == 0) return desc.type == nvinfer1::DataType::kFLOAT || desc.type == nvinfer1::DataType::kHALF;
  return desc.type == inOut[0].desc.type;  // offset, mask and output follow the input
}

int32_t DCNv3Plugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                     const nvinfer1::DynamicPluginTensorDesc*, int32_t nbOutputs) noexcept {
  if (nbInputs != 3 || nbOutputs != 1) return -1;
  const int64_t channels = in[0].desc.dims.d[3];
  if (channels >= 0 && channels != int64_t(attrs_.group) * attrs_.group_channels) {
    log_error("input channels != group * group_channels");
    return -1;
  }
  return 0;
}

int32_t DCNv3Plugin::onShapeChange(const nvinfer1::PluginTensorDesc*, int32_t, const nvinfer1::PluginTensorDesc*,
                                   int32_t) noexcept {
  return 0;
}

int32_t DCNv3Plugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                             const void* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept {
  const nvinfer1::Dims& in = inputDesc[0].dims;
  const nvinfer1::Dims& out = outputDesc[0].dims;
  Geometry g{};
  g.height = static_cast<int>(in.d[1]);
  g.width = static_cast<int>(in.d[2]);
  g.channels = static_cast<int>(in.d[3]);
  g.out_height = static_cast<int>(out.d[1]);
  g.out_width = static_cast<int>(out.d[2]);
  g.group = attrs_.group;
  g.group_channels = attrs_.group_channels;
  g.kernel_h = attrs_.kernel_h;
  g.kernel_w = attrs_.kernel_w;
  g.stride_h = attrs_.stride_h;
  g.stride_w = attrs_.stride_w;
  g.pad_h = attrs_.pad_h;
  g.pad_w = attrs_.pad_w;
  g.dilation_h = attrs_.dilation_h;
  g.dilation_w = attrs_.dilation_w;
  g.remove_center = attrs_.remove_center != 0;
  g.points = attrs_.kernel_h * attrs_.kernel_w - (g.remove_center ? 1 : 0);
  g.offset_scale = attrs_.offset_scale;
  const int64_t batch = in.d[0];

  cudaError_t status = cudaErrorInvalidValue;
  switch (inputDesc[0].type) {
    case nvinfer1::DataType::kFLOAT:
      status = cuda::launch_forward<float, float>(
          static_cast<const float*>(inputs[0]), static_cast<const float*>(inputs[1]),
          static_cast<const float*>(inputs[2]), static_cast<float*>(outputs[0]), g, batch, stream);
      break;
    case nvinfer1::DataType::kHALF:  // half storage, float accumulation
      status = cuda::launch_forward<__half, float>(
          static_cast<const __half*>(inputs[0]), static_cast<const __half*>(inputs[1]),
          static_cast<const __half*>(inputs[2]), static_cast<__half*>(outputs[0]), g, batch, stream);
      break;
    default:
      log_error("unsupported data type (float32 and float16 only)");
      return -1;
  }
  if (status != cudaSuccess) {
    log_error(cudaGetErrorString(status));
    return -1;
  }
  return 0;
}

nvinfer1::IPluginV3* DCNv3Plugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept { return clone(); }

const nvinfer1::PluginFieldCollection* DCNv3Plugin::getFieldsToSerialize() noexcept {
  fields_.clear();
  for (const auto& f : kIntFields) {
    fields_.emplace_back(f.name, &(attrs_.*(f.member)), nvinfer1::PluginFieldType::kINT32, 1);
  }
  fields_.emplace_back("offset_scale", &attrs_.offset_scale, nvinfer1::PluginFieldType::kFLOAT32, 1);
  field_collection_.nbFields = static_cast<int32_t>(fields_.size());
  field_collection_.fields = fields_.data();
  return &field_collection_;
}

DCNv3PluginCreator::DCNv3PluginCreator() {
  for (const auto& f : kIntFields) {
    fields_.emplace_back(f.name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
  }
  fields_.emplace_back("offset_scale", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1);
  field_collection_.nbFields = static_cast<int32_t>(fields_.size());
  field_collection_.fields = fields_.data();
}

const char* DCNv3PluginCreator::getPluginName() const noexcept { return kPluginName; }
const char* DCNv3PluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
const char* DCNv3PluginCreator::getPluginNamespace() const noexcept { return namespace_.c_str(); }
const nvinfer1::PluginFieldCollection* DCNv3PluginCreator::getFieldNames() noexcept { return &field_collection_; }

nvinfer1::IPluginV3* DCNv3PluginCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                      nvinfer1::TensorRTPhase) noexcept {
  // The same fields arrive from the ONNX parser (build) and from the engine (runtime).
  Attributes attrs;
  for (int32_t k = 0; fc != nullptr && k < fc->nbFields; ++k) {
    const nvinfer1::PluginField& field = fc->fields[k];
    if (field.name == nullptr) continue;
    bool ok = true;
    if (std::strcmp(field.name, "offset_scale") == 0) {
      ok = read_float(field, attrs.offset_scale);
    } else {
      for (const auto& f : kIntFields) {
        if (std::strcmp(field.name, f.name) == 0) ok = read_int(field, attrs.*(f.member));
      }
    }
    if (!ok) {
      log_error("attribute of unexpected type");
      return nullptr;
    }
  }
  if (!valid(attrs)) return nullptr;
  auto* plugin = new (std::nothrow) DCNv3Plugin(attrs);
  if (plugin != nullptr) plugin->setPluginNamespace(namespace_.c_str());
  return plugin;
}

}  // namespace trt
}  // namespace dcnv3

#ifdef DCNV3_STATIC_REGISTRATION
// Registers the creator when the library is loaded (trtexec --staticPlugins, dlopen,
// mmdeploy's ctypes load, LD_PRELOAD).
REGISTER_TENSORRT_PLUGIN(dcnv3::trt::DCNv3PluginCreator);
#endif

// Entry point of IPluginRegistry::loadLibrary (trtexec --dynamicPlugins) for V3 plugins.
extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static dcnv3::trt::DCNv3PluginCreator creator;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}
