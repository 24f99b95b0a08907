// Adapter files: a .safetensors holding only the tensors an adaptation trained (biases, scales, label
// rows, LoRA factors), with metadata saying how to apply them and to which base model:
//
//   atelier.kind      "adapter"
//   adapter.method    difffit | bitfit | full | lora | ortho_lora
//   adapter.base      SHA-256 of the base model (model_hash), checked when the adapter is applied
//   adapter.classes   JSON list of the adapted model's class names (its label table rows)
//   adapter.settings  JSON of the method's settings (placement, LoRA rank/alpha/targets, input size)
//   atelier.config    the job's config
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "adapters/adapter_method.h"
#include "core/config.h"
#include "core/tensor_map.h"

namespace torch::nn {
class Module;
}

namespace atelier {

struct AdapterInfo {
  AdapterMethod method = AdapterMethod::DiffFit;
  std::string base_hash;
  std::vector<std::string> classes;
  json settings = json::object();
  json config = json::object();
};

struct AdapterFile {
  TensorMap tensors;
  AdapterInfo info;
};

void save_adapter(const std::filesystem::path& path, const TensorMap& tensors, const AdapterInfo& info);
// Error naming the file when it is not an Atelier adapter.
AdapterFile load_adapter(const std::filesystem::path& path);
bool is_adapter_file(const std::filesystem::path& path);

// SHA-256 (hex) over a module's parameters and buffers in name order: name, dtype, shape and the
// little-endian bytes of each. Independent of the file format the model came from.
std::string model_hash(const torch::nn::Module& module);

}  // namespace atelier
