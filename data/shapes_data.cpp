#include "data/shapes_data.h"

#include <algorithm>

namespace atelier {
namespace {

std::vector<int> indices_of(const std::vector<std::string>& names, const std::vector<std::string>& all,
                            const char* field, bool unique) {
  std::vector<int> out;
  for (const auto& n : names) {
    const auto it = std::find(all.begin(), all.end(), n);
    if (it == all.end()) {
      std::string list;
      for (const auto& a : all) list += (list.empty() ? "" : ", ") + a;
      fail_field(field, "'", n, "' is not one of: ", list);
    }
    const int index = static_cast<int>(it - all.begin());
    if (unique && std::find(out.begin(), out.end(), index) != out.end()) fail_field(field, "'", n, "' is listed twice");
    out.push_back(index);
  }
  return out;
}

}  // namespace

shapes::Spec ShapesData::spec(int size) const {
  shapes::Spec s;
  s.size = size;
  s.shapes = indices_of(classes, shapes::shape_names(), "classes", true);
  s.glyphs = indices_of(glyphs, shapes::glyph_names(), "glyphs", true);
  s.styles = indices_of(styles, shapes::style_names(), "styles", false);
  if (s.styles.empty()) s.styles = {0};
  if (min_scale > max_scale) fail_field("min_scale", min_scale, " is larger than 'max_scale' (", max_scale, ")");
  s.min_scale = static_cast<float>(min_scale);
  s.max_scale = static_cast<float>(max_scale);
  s.jitter = static_cast<float>(jitter);
  s.rotation = static_cast<float>(rotation);
  s.plain_backgrounds = plain_backgrounds;
  s.seed = static_cast<std::uint64_t>(seed);
  return s;
}

std::vector<std::string> shapes_class_names(const shapes::Spec& spec) {
  std::vector<std::string> out;
  for (int i = 0; i < spec.num_labels(); ++i) out.push_back(spec.label_name(i));
  return out;
}

}  // namespace atelier
