// Export of an E2GAN generator (gan/e2gan.h) with one edit folded in, for mobile runtimes.
//
// The exported graph is the generator at a fixed input size [1, 3, H, W] (H, W multiples of 8) with the
// edit's tokens baked in: input "input" in [-1, 1], output "output" in [-1, 1], both float32.
//
//   ONNX (IR 8, opset 17, written with the ONNX protobuf API): Conv, InstanceNormalization, Relu, Add,
//   Resize (nearest, asymmetric + floor: torch's nearest x2 exactly), Tanh, Reshape, Transpose,
//   LayerNormalization, MatMul, Softmax, Mul, Div, Erf (exact GELU). The qkv projection is written as
//   three MatMuls, the attention scale 1/sqrt(head_dim) is folded into the query projection, and the
//   cross-attention's keys and values (projections of the constant edit tokens) are precomputed
//   initializers.
//
// With WeightPrecision::FP16 every weight initializer is stored as float16 and followed by a Cast to
// float, so the file is half the size and runs on any onnxruntime CPU build; activations stay float32.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "gan/e2gan.h"
#include "gan/onnx_proto.h"

namespace atelier {

enum class WeightPrecision { FP32, FP16 };

struct GanExportOptions {
  std::int64_t height = 256;
  std::int64_t width = 256;
  WeightPrecision precision = WeightPrecision::FP32;
  std::string edit;  // recorded in the file's metadata
};

// Error naming `field` unless height and width are positive multiples of the generator's stride (8).
void check_export_size(std::int64_t height, std::int64_t width, const std::string& field);

// Writes the generator with `tokens` [E, c2] (the edit's row of the table, LoRA already merged) as an
// ONNX model, atomically. The model is validated by the ONNX checker before it is written.
void write_gan_onnx(const std::filesystem::path& path, E2GanGenerator& generator, const torch::Tensor& tokens,
                    const GanExportOptions& options);

// What an ONNX file says about itself, parsed back with the ONNX protobuf classes.
using OnnxFileInfo = onnx_proto::Summary;
OnnxFileInfo read_onnx_info(const std::filesystem::path& path);
// Runs the ONNX checker (the C++ one of the linked ONNX library) on a file; Error naming it otherwise.
void check_onnx_file(const std::filesystem::path& path);

}  // namespace atelier
