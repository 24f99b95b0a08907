#include <catch2/catch.hpp>

#include "core/image.h"
#include "data/shapes.h"
#include "tests/helpers.h"

using namespace atelier;

TEST_CASE("Shapes samples are deterministic per (seed, split, index)", "[shapes]") {
  shapes::Spec spec;
  spec.seed = 3;
  auto a = shapes::make_batch(spec, 0, 10, 8);
  auto b = shapes::make_batch(spec, 0, 10, 8);
  CHECK(torch::equal(a.images, b.images));
  CHECK(torch::equal(a.labels, b.labels));
  auto other_split = shapes::make_batch(spec, 1, 10, 8);
  CHECK_FALSE(torch::equal(a.images, other_split.images));
  spec.seed = 4;
  CHECK_FALSE(torch::equal(a.images, shapes::make_batch(spec, 0, 10, 8).images));
  CHECK(a.images.min().item<float>() >= -1.0f);
  CHECK(a.images.max().item<float>() <= 1.0f);
}

TEST_CASE("Shapes covers every class, glyph and style and renders any size", "[shapes]") {
  shapes::Spec spec;
  spec.styles = {0, 1, 2, 3, 4};
  auto b = shapes::make_batch(spec, 0, 0, 400);
  for (int c = 0; c < 8; ++c) CHECK(b.labels.eq(c).sum().item<int>() > 20);
  for (int s = 0; s < 5; ++s) CHECK(b.styles.eq(s).sum().item<int>() > 40);
  spec.glyphs = {0, 1, 2, 3, 4};
  CHECK(spec.num_labels() == 5);
  CHECK(spec.label_name(1) == "bolt");
  spec.size = 64;
  auto big = shapes::make_batch(spec, 2, 0, 2);
  CHECK(big.images.sizes() == torch::IntArrayRef({2, 3, 64, 64}));
  CHECK_THROWS_WITH(shapes::render(shapes::Attributes{}, 4), Catch::Contains("outside [8, 4096]"));
}

TEST_CASE("a drawn shape differs from its background and captions describe it", "[shapes]") {
  shapes::Attributes a;
  a.shape = 1;
  a.color = 5;
  Image img = shapes::render(a, 32);
  auto t = image_to_tensor(img);
  // centre pixel (shape) vs corner (background)
  auto centre = t.index({torch::indexing::Slice(), 16, 16});
  auto corner = t.index({torch::indexing::Slice(), 0, 0});
  CHECK(test::max_abs_diff(centre, corner) > 0.5);
  CHECK(a.caption() == "a medium blue square on a plain background, flat style");
}

TEST_CASE("Shapes rotation range: any angle by default, upright at 0, the rest of a sample unchanged", "[shapes]") {
  shapes::Spec any, upright, tilted;
  upright.rotation = 0;
  tilted.rotation = 30;
  bool wide = false;
  for (int i = 0; i < 64; ++i) {
    const auto a = shapes::sample_attributes(any, 0, i);
    const auto u = shapes::sample_attributes(upright, 0, i);
    const auto t = shapes::sample_attributes(tilted, 0, i);
    wide = wide || a.angle > 30;
    CHECK(u.angle == 0.0f);
    CHECK(std::abs(t.angle) <= 15.0f);
    // Same draws otherwise: class, colour, size and position do not depend on the rotation range.
    CHECK(u.shape == a.shape);
    CHECK(u.color == a.color);
    CHECK(u.scale == a.scale);
    CHECK(u.cx == a.cx);
  }
  CHECK(wide);
}
