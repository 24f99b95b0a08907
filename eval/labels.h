// The label space of the Shapes probe: every base shape, then every concept glyph, in the order of
// data/shapes.h (shapes 0-7, glyphs 8-12 today). Metrics compare generated images against these labels,
// so this is the one place that maps Shapes names to probe labels.
#pragma once
#include <cstdint>
#include <string>

namespace atelier {

std::int64_t probe_num_labels();
// Label of a base shape index / a glyph index.
std::int64_t probe_shape_label(std::int64_t shape);
std::int64_t probe_glyph_label(std::int64_t glyph);
// Name of a label; label of a Shapes class or glyph name (Error naming it when it is neither).
std::string probe_label_name(std::int64_t label);
std::int64_t probe_label_of(const std::string& name);
// Whether `name` is a Shapes class or glyph, i.e. has a probe label.
bool probe_knows(const std::string& name);

}  // namespace atelier
