// Shapes generator presets: named ShapesData settings (the `data` block of train_base, difffit and the
// concept jobs) that the studio's Data panel and `atelier shapes` offer, rendered as images or written as
// a folder dataset (one sub-folder per class, a .txt caption next to each image). Torch-free header.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/pixels.h"

namespace atelier {

struct ShapesPreset {
  std::string name;
  std::string help;
  json data;  // ShapesData fields
};
const std::vector<ShapesPreset>& shapes_presets();
// The preset called `name`; Error listing the presets when there is none.
const ShapesPreset& shapes_preset(const std::string& name);

// Renders `count` images of `data`'s training split, with their captions. Throws FieldError naming the
// field of `data` that is invalid.
std::vector<Image> render_shapes(const json& data, int size, int count, std::vector<std::string>* captions = nullptr);
// Writes `count` images as a folder dataset.
void write_shapes_folder(const json& data, int size, int count, const std::filesystem::path& folder);

}  // namespace atelier
