// The Shapes world: a deterministic procedural image dataset drawn with OpenCV. Every sample is a pure
// function of (seed, split, index), so datasets need no files and reproduce bit for bit.
//
//   base classes   8 shapes (circle, square, triangle, star, cross, ring, hexagon, heart)
//   concepts       5 distinctive glyphs (spiral, bolt, key, moon, eye) for customization
//   styles         flat, outline, striped, night, pixel: target domains for adaptation
//   attributes     colour, size, position, rotation, background (solid / two-tone / gradient)
//
// Images are drawn at 4x and area-downsampled (anti-aliased), at any size (default 32x32).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/image.h"

namespace atelier::shapes {

const std::vector<std::string>& shape_names();  // 8 base classes
const std::vector<std::string>& glyph_names();  // 5 concept glyphs
const std::vector<std::string>& style_names();  // flat, outline, striped, night, pixel
const std::vector<std::string>& color_names();
const std::vector<std::string>& split_names();  // train, val, test

// Index of `name` in `names`; Error listing the choices when absent.
int index_of(const std::vector<std::string>& names, const std::string& name, const std::string& what);

struct Attributes {
  int shape = 0;       // index into shape_names(), or -1 for a glyph
  int glyph = -1;      // index into glyph_names() when a concept glyph is drawn
  int color = 0;       // index into color_names()
  int style = 0;       // index into style_names()
  int background = 0;  // 0 solid, 1 two-tone, 2 gradient
  float scale = 0.6f;  // shape extent / image size
  float cx = 0.5f, cy = 0.5f;
  float angle = 0.0f;  // degrees
  std::string caption() const;
};

struct Spec {
  int size = 32;
  std::vector<int> shapes;     // base classes drawn (indices); empty: all 8
  std::vector<int> glyphs;     // concept glyphs drawn instead of shapes when non-empty
  std::vector<int> styles{0};  // styles sampled uniformly
  float min_scale = 0.5f, max_scale = 0.8f;
  float jitter = 0.12f;            // max centre offset (fraction of the image)
  float rotation = 360.0f;         // angles uniform in [-rotation/2, rotation/2] degrees (360: any; 0: upright)
  bool plain_backgrounds = false;  // only solid light backgrounds
  std::uint64_t seed = 0;

  // Label of a sample: position in `glyphs` when drawing glyphs, else position in `shapes`.
  int num_labels() const;
  std::string label_name(int label) const;
};

// Deterministic attributes for (spec, split, index).
Attributes sample_attributes(const Spec& spec, int split, std::int64_t index, int* label = nullptr);
Image render(const Attributes& a, int size);

struct Batch {
  torch::Tensor images;  // [N, 3, H, W] in [-1, 1]
  torch::Tensor labels;  // [N] int64
  torch::Tensor styles;  // [N] int64
};
// Samples first_index .. first_index + count - 1 of a split. With `restyle` >= 0 (an index into
// style_names()), the same scenes (shape, colour, size, position, rotation, background) rendered in that
// style instead: a ground-truth restyle of the batch drawn without it.
Batch make_batch(const Spec& spec, int split, std::int64_t first_index, std::int64_t count, int restyle = -1);

}  // namespace atelier::shapes
