// ShapesData: the typed config block a job uses to say which Shapes images it trains or evaluates on
// (base classes, target domains and concepts are all Shapes specs). Composed into job configs like
// `TrainSchedule`; its field names ("classes", "glyphs", "styles", ...) are the job file's keys.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "data/shapes.h"

namespace atelier {

struct ShapesData {
  std::vector<std::string> classes;  // empty: all 8 base shapes
  std::vector<std::string> glyphs;   // non-empty: draw these concept glyphs instead of shapes
  std::vector<std::string> styles{"flat"};
  double min_scale = 0.55, max_scale = 0.85, jitter = 0.08, rotation = 360;
  bool plain_backgrounds = true;
  std::int64_t seed = 0;

  template <class V>
  void fields(V& v, const char* classes_help = "Shapes classes (empty: all 8)") {
    v("classes", classes, classes_help, Choices(shapes::shape_names()));
    v("glyphs", glyphs, "concept glyphs to draw instead of shapes", Choices(shapes::glyph_names()));
    v("styles", styles, "rendering styles sampled uniformly", Choices(shapes::style_names()));
    v("min_scale", min_scale, "smallest shape extent / image size", Range{0.1, 1});
    v("max_scale", max_scale, "largest shape extent / image size", Range{0.1, 1});
    v("jitter", jitter, "max centre offset (fraction of the image)", Range{0, 0.4});
    v("rotation", rotation, "rotation range in degrees around upright (360: any angle; 0: upright)", Range{0, 360});
    v("plain_backgrounds", plain_backgrounds, "solid light backgrounds only");
    v("data_seed", seed, "seed of the procedural dataset", Range{0, 9e15});
  }
  // The Spec at `size` pixels. Error naming the field for unknown names or min_scale > max_scale.
  shapes::Spec spec(int size) const;
};

// Class names of a Shapes spec's labels, in label order.
std::vector<std::string> shapes_class_names(const shapes::Spec& spec);

}  // namespace atelier
