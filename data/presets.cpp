#include "data/presets.h"

#include <algorithm>

#include "core/atomic_file.h"
#include "core/image.h"
#include "data/corruptions.h"
#include "data/shapes_data.h"

namespace atelier {
namespace fs = std::filesystem;

const std::vector<ShapesPreset>& shapes_presets() {
  static const std::vector<ShapesPreset> presets = {
      {"base classes", "the 8 base shapes at any rotation, flat style, plain backgrounds", json::object()},
      {"outline", "outline style: a target domain for adaptation", {{"styles", {"outline"}}}},
      {"striped", "striped fills", {{"styles", {"striped"}}}},
      {"night", "dark backgrounds, glowing shapes", {{"styles", {"night"}}}},
      {"pixel", "pixel-art rendering", {{"styles", {"pixel"}}}},
      {"concept glyphs", "the 5 concept glyphs used for customization", {{"glyphs", shapes::glyph_names()}}},
      {"busy",
       "smaller shapes on two-tone and gradient backgrounds",
       {{"min_scale", 0.3}, {"max_scale", 0.6}, {"jitter", 0.2}, {"plain_backgrounds", false}}},
      {"shipped base",
       "what assets/models/dit_shapes.safetensors learned: 7 shapes (no hexagon), upright, flat, plain backgrounds "
       "(test-time adaptation's source domain)",
       {{"classes", {"circle", "square", "triangle", "star", "cross", "ring", "heart"}}, {"rotation", 0}}},
  };
  return presets;
}

const ShapesPreset& shapes_preset(const std::string& name) {
  const auto& presets = shapes_presets();
  auto it = std::find_if(presets.begin(), presets.end(), [&](const ShapesPreset& p) { return p.name == name; });
  if (it != presets.end()) return *it;
  std::string names;
  for (const auto& p : presets) names += "\n  " + p.name + ": " + p.help;
  fail("unknown preset '", name, "'; known:", names);
}

void ShapesCorruption::check() const {
  if (none()) return;
  check_corruption(name == "all" ? corruption_names().front() : name, severity);
}

namespace {

shapes::Spec spec_of(const json& data, int size) {
  return with_context([&] { return from_json<ShapesData>(data).spec(size); }, "Shapes data");
}

// Sample i of the training split, corrupted as `name` says ("none": clean).
Image render_sample(const shapes::Spec& spec, const shapes::Attributes& a, int i, const std::string& name,
                    int severity) {
  Image image = shapes::render(a, spec.size);
  if (name.empty() || name == "none") return image;
  return corrupt(image, name, severity, corruption_seed(spec.seed, i));
}

void write_tree(const shapes::Spec& spec, int count, const fs::path& folder, const std::string& name, int severity) {
  for (int i = 0; i < count; ++i) {
    int label = 0;
    const shapes::Attributes a = shapes::sample_attributes(spec, 0, i, &label);
    const fs::path dir = folder / spec.label_name(label);
    fs::create_directories(dir);
    char stem[32];
    std::snprintf(stem, sizeof(stem), "%05d", i);
    save_png(dir / (std::string(stem) + ".png"), render_sample(spec, a, i, name, severity));
    write_file_atomic(dir / (std::string(stem) + ".txt"), a.caption() + "\n");
  }
}

}  // namespace

std::vector<Image> render_shapes(const json& data, int size, int count, std::vector<std::string>* captions,
                                 const ShapesCorruption& corruption) {
  const shapes::Spec spec = spec_of(data, size);
  corruption.check();
  if (corruption.name == "all") fail("corruption 'all' writes folders only; pick one corruption to render");
  std::vector<Image> out;
  for (int i = 0; i < count; ++i) {
    const shapes::Attributes a = shapes::sample_attributes(spec, 0, i);
    out.push_back(render_sample(spec, a, i, corruption.name, corruption.severity));
    if (captions != nullptr) captions->push_back(a.caption());
  }
  return out;
}

void write_shapes_folder(const json& data, int size, int count, const fs::path& folder,
                         const ShapesCorruption& corruption) {
  const shapes::Spec spec = spec_of(data, size);
  corruption.check();
  if (corruption.name != "all") return write_tree(spec, count, folder, corruption.name, corruption.severity);
  for (const std::string& name : corruption_names()) write_tree(spec, count, folder / name, name, corruption.severity);
}

}  // namespace atelier
