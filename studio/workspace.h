// What the app shows about files on disk: model and adapter files with their metadata, image folders,
// Shapes presets, and the checks a job's inputs get before it starts. Torch-free header: the GUI's
// panels include it; functions marked (worker) load tensors and run on the job worker thread.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/pixels.h"

namespace atelier {

struct PreparedRun;

struct ModelFileInfo {
  std::filesystem::path path;
  std::string kind;                  // "dit", "adapter", "probe", "vae", "lora (kohya)", "checkpoint", "safetensors"
  std::string method;                // adapters: difffit, bitfit, full, lora, ortho_lora
  std::string base_hash;             // adapters: SHA-256 of the base model they were trained on
  std::vector<std::string> classes;  // class names or concepts
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

// Shapes generator presets (the `data` object of train_base and the concept jobs).
struct ShapesPreset {
  std::string name;
  std::string help;
  json data;
};
const std::vector<ShapesPreset>& shapes_presets();
// Renders `count` images of a preset's training split, with their captions. Throws Error naming the
// field of `data` that is invalid.
std::vector<Image> render_shapes(const json& data, int size, int count, std::vector<std::string>* captions = nullptr);
// Writes `count` images as a folder dataset (one sub-folder per class, a .txt caption next to each image).
void write_shapes_folder(const json& data, int size, int count, const std::filesystem::path& folder);

// (worker) The LoRA/adapter compatibility report of `file` against base model `base`, as text.
std::string compatibility_report(const std::filesystem::path& file, const std::filesystem::path& base);
// (worker) Checks a prepared job's inputs before it runs: every adapter was trained on the job's base
// model and every image folder holds images. Throws Error naming the file.
void check_job_inputs(const PreparedRun& run);

}  // namespace atelier
