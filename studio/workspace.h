// What the app shows about files on disk: model and adapter files with their metadata (header only) and
// image folders. Torch-free header: the GUI's panels include it. Operations on those files (fold, LoRA
// conversion, compatibility, input checks) are in studio/model_ops.h; Shapes presets in data/presets.h.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter_method.h"
#include "core/config.h"
#include "core/pixels.h"

namespace atelier {

struct ModelFileInfo {
  std::filesystem::path path;
  std::string
      kind;  // "dit", "adapter", "probe", "vae", "lora (kohya)", "stable diffusion", "checkpoint", "safetensors"
  std::string method;                           // adapters: difffit, bitfit, full, lora, ortho_lora (as the file says)
  std::optional<AdapterMethod> adapter_method;  // adapters whose method this build knows
  std::string base_hash;                        // adapters: SHA-256 of the base model they were trained on
  std::vector<std::string> classes;             // class names or concepts
  std::uintmax_t bytes = 0;
  std::size_t tensors = 0;
  std::int64_t parameters = 0;
  std::map<std::string, std::string> metadata;
  std::string error;  // set instead of the fields above when the file cannot be read
};

// Reads the safetensors header only (no tensor data). Never throws: problems land in `error`.
ModelFileInfo read_model_file_info(const std::filesystem::path& path);
// Every .safetensors below the roots (recursive, sorted; checkpoints/ folders skipped).
std::vector<ModelFileInfo> scan_model_files(const std::vector<std::filesystem::path>& roots);

struct ImageFolderInfo {
  std::filesystem::path root;
  std::vector<std::string> classes;  // class sub-folders; empty for a flat folder
  struct Item {
    std::filesystem::path image;
    int label = 0;
    std::string caption;
  };
  std::vector<Item> items;
};
// Throws Error naming the folder when it is missing or holds no images.
ImageFolderInfo scan_image_folder(const std::filesystem::path& root);

// Where Atelier's shipped files (assets/models, assets/jobs) are: $ATELIER_HOME when set, else the nearest
// folder above the running program that holds assets/models (the source tree of a build) or
// share/atelier/assets/models (an installation prefix). Empty when neither is found.
const std::filesystem::path& installation_dir();
// A path as a job opens it: unchanged when absolute or present relative to the working folder; otherwise
// the installation's file of that relative name when it exists (a fresh workspace's assets/models/...).
std::string resolve_shipped(const std::string& path);
// Resolves every input path of a job's effective config (fields declared with Input) with resolve_shipped.
void resolve_input_paths(const std::vector<FieldInfo>& fields, json& effective);

}  // namespace atelier
