// Format detection and loading of any tensor file Atelier reads: safetensors or torch.save zip.
#pragma once
#include <filesystem>
#include <string>

#include "core/tensor_map.h"

namespace atelier {

enum class FileFormat { Safetensors, TorchZip, Png, Jpeg, Unknown };
const char* format_name(FileFormat f);
// By content (magic bytes), not by extension. Throws Error if the file cannot be read.
FileFormat detect_format(const std::filesystem::path& path);
// Loads tensors + metadata from a safetensors file or a torch checkpoint (flattened to dotted names).
TensorFile load_tensor_file(const std::filesystem::path& path);

}  // namespace atelier
