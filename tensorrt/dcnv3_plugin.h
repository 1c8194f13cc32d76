// TensorRT 10 plugin "TRTDCNv3" (version "1"), the node mmdeploy::TRTDCNv3 that
// ops_dcnv3 exports in its plugin form (see /ops_dcnv3/export.py and dcnv3.md).
// IPluginV3 with float32 and float16 I/O (float accumulation), remove_center supported;
// enqueue calls the same kernel launcher as the PyTorch CUDA extension.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../ops_dcnv3/csrc/dcnv3_sampling.h"

namespace dcnv3 {
namespace trt {

// Attributes of the ONNX node, as the ONNX parser hands them over (no _i/_f suffix).
struct Attributes {
  int32_t kernel_h = 3, kernel_w = 3, stride_h = 1, stride_w = 1, pad_h = 1, pad_w = 1;
  int32_t dilation_h = 1, dilation_w = 1, group = 4, group_channels = 16;
  float offset_scale = 1.0f;
  int32_t im2col_step = 256;  // batching hint of the PyTorch op; unused here
  int32_t remove_center = 0;
};

class DCNv3Plugin : public nvinfer1::IPluginV3,
                    public nvinfer1::IPluginV3OneCore,
                    public nvinfer1::IPluginV3OneBuild,
                    public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit DCNv3Plugin(const Attributes& attrs);
  ~DCNv3Plugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                          const nvinfer1::DimsExprs* shapeInputs, int32_t nbShapeInputs,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs,
                          int32_t nbOutputs) const noexcept override {
    return 0;
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                        const nvinfer1::PluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

  void setPluginNamespace(const char* ns) noexcept { namespace_ = ns; }

 private:
  Attributes attrs_;
  std::string namespace_;
  // Serialised through getFieldsToSerialize: TensorRT stores them in the engine and
  // hands them back to the creator at deserialisation (phase kRUNTIME).
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

class DCNv3PluginCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  DCNv3PluginCreator();
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  void setPluginNamespace(const char* ns) noexcept { namespace_ = ns; }

 private:
  std::string namespace_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

}  // namespace trt
}  // namespace dcnv3
