// The same exported generator as gan/export_onnx.h, as an ncnn model: a text .param (magic 7767517)
// and a .bin of weights. Blobs carry no batch axis ([C, H, W]; the transformer's tokens [T, D] as a 2-D
// blob). Layers: Input, Convolution, InstanceNorm, ReLU, BinaryOp (add), Interp (nearest x2), Reshape,
// Permute, LayerNorm, MultiHeadAttention (q/k/v/out projections inside; the cross-attention reads the
// edit tokens from a MemoryData), InnerProduct, GELU (exact, erf), TanH, and Split wherever a blob feeds
// two layers. Parameter ids follow ncnn's src/layer/*.cpp load_param.
//
// In the .bin, Convolution / InnerProduct / MultiHeadAttention weights carry ncnn's 4-byte storage tag:
// 0 and float32 data (FP32), or 0x01306B47 and float16 data padded to 4 bytes (FP16; ncnn widens them
// to float32 when it loads the model). Biases, norm affines and the MemoryData stay float32.
#pragma once
#include <filesystem>

#include "gan/export_onnx.h"

namespace atelier {

// Writes <param> and <bin> atomically (both or neither).
void write_gan_ncnn(const std::filesystem::path& param, const std::filesystem::path& bin, E2GanGenerator& generator,
                    const torch::Tensor& tokens, const GanExportOptions& options);

}  // namespace atelier
