// Shapes generator presets: named ShapesData settings (the `data` block of train_base, difffit and the
// concept jobs) that the studio's Data panel and `atelier shapes` offer, rendered as images or written as
// a folder dataset (one sub-folder per class, a .txt caption next to each image), clean or corrupted
// (Shapes-C, data/corruptions.h). Torch-free header.
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

// A corruption applied to Shapes images (Shapes-C): image i of the training split is corrupted with
// corruption_seed(data_seed, i), so a preview shows the first images of the folder written with it.
struct ShapesCorruption {
  std::string name = "none";  // "none" (or empty): clean; a corruption_names() entry; "all": every one
  int severity = 5;           // 1..5
  bool none() const { return name.empty() || name == "none"; }
  // Error listing the names for an unknown name, naming the value for a severity outside 1..5.
  void check() const;
};

// Renders `count` images of `data`'s training split, with their captions (the scene's; the corruption is
// not named). Throws FieldError naming the field of `data` that is invalid; "all" is for folders only.
std::vector<Image> render_shapes(const json& data, int size, int count, std::vector<std::string>* captions = nullptr,
                                 const ShapesCorruption& corruption = {});
// Writes `count` images as a folder dataset: folder/<class>/<index>.png and .txt. With corruption "all",
// one such tree per corruption: folder/<corruption>/<class>/... Everything is checked before anything
// is written; each file is written atomically.
void write_shapes_folder(const json& data, int size, int count, const std::filesystem::path& folder,
                         const ShapesCorruption& corruption = {});

}  // namespace atelier
