#include "data/presets.h"

#include <algorithm>

#include "core/atomic_file.h"
#include "core/image.h"
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

std::vector<Image> render_shapes(const json& data, int size, int count, std::vector<std::string>* captions) {
  const shapes::Spec spec = with_context([&] { return from_json<ShapesData>(data).spec(size); }, "Shapes data");
  std::vector<Image> out;
  for (int i = 0; i < count; ++i) {
    const shapes::Attributes a = shapes::sample_attributes(spec, 0, i);
    out.push_back(shapes::render(a, size));
    if (captions != nullptr) captions->push_back(a.caption());
  }
  return out;
}

void write_shapes_folder(const json& data, int size, int count, const fs::path& folder) {
  const shapes::Spec spec = with_context([&] { return from_json<ShapesData>(data).spec(size); }, "Shapes data");
  for (int i = 0; i < count; ++i) {
    int label = 0;
    const shapes::Attributes a = shapes::sample_attributes(spec, 0, i, &label);
    const fs::path dir = folder / spec.label_name(label);
    fs::create_directories(dir);
    char name[32];
    std::snprintf(name, sizeof(name), "%05d", i);
    save_png(dir / (std::string(name) + ".png"), shapes::render(a, size));
    write_file_atomic(dir / (std::string(name) + ".txt"), a.caption() + "\n");
  }
}

}  // namespace atelier
