#include "eval/labels.h"

#include <algorithm>

#include "core/error.h"
#include "data/shapes.h"

namespace atelier {
namespace {
std::int64_t shape_count() {
  return static_cast<std::int64_t>(shapes::shape_names().size());
}
}  // namespace

std::int64_t probe_num_labels() {
  return shape_count() + static_cast<std::int64_t>(shapes::glyph_names().size());
}

std::int64_t probe_shape_label(std::int64_t shape) {
  return shape;
}

std::int64_t probe_glyph_label(std::int64_t glyph) {
  return shape_count() + glyph;
}

std::string probe_label_name(std::int64_t label) {
  if (label < 0 || label >= probe_num_labels()) fail("probe label ", label, " is outside 0-", probe_num_labels() - 1);
  const auto i = static_cast<std::size_t>(label);
  return label < shape_count() ? shapes::shape_names()[i] : shapes::glyph_names()[i - shapes::shape_names().size()];
}

std::int64_t probe_label_of(const std::string& name) {
  const auto& s = shapes::shape_names();
  const auto& g = shapes::glyph_names();
  if (auto it = std::find(s.begin(), s.end(), name); it != s.end()) return probe_shape_label(it - s.begin());
  if (auto it = std::find(g.begin(), g.end(), name); it != g.end()) return probe_glyph_label(it - g.begin());
  fail("'", name, "' is neither a Shapes class nor a concept glyph");
}

bool probe_knows(const std::string& name) {
  const auto& s = shapes::shape_names();
  const auto& g = shapes::glyph_names();
  return std::find(s.begin(), s.end(), name) != s.end() || std::find(g.begin(), g.end(), name) != g.end();
}

}  // namespace atelier
