#include <catch2/catch.hpp>

#include "core/rng.h"
#include "data/shapes.h"
#include "eval/metrics.h"

using namespace atelier;

TEST_CASE("Frechet distance matches the closed form for Gaussians", "[metrics]") {
  Rng rng(0);
  auto a = rng.randn({4000, 3}, torch::kDouble);
  CHECK(frechet_distance(a, a) == Approx(0).margin(1e-9));
  // N(0, I) vs N(mu, 4I): |mu|^2 + 3 * (1 + 4 - 2 * 2) = |mu|^2 + 3
  auto b = rng.randn({4000, 3}, torch::kDouble) * 2 + torch::tensor({1.0, 0.0, 2.0}, torch::kDouble);
  CHECK(frechet_distance(a, b) == Approx(5 + 3).epsilon(0.1));
  CHECK_THROWS_WITH(frechet_distance(a, rng.randn({10, 4})), Catch::Contains("[N, F]"));
}

TEST_CASE("sharpness is zero for flat images and grows with detail", "[metrics]") {
  auto flat = torch::zeros({2, 3, 16, 16});
  CHECK(sharpness(flat) == Approx(0));
  auto checker = torch::ones({2, 3, 16, 16});
  checker.index_put_({torch::indexing::Slice(), torch::indexing::Slice(), torch::indexing::Slice(0, 16, 2)}, -1);
  CHECK(sharpness(checker) > 1000);
  CHECK(sharpness(torch::nn::functional::avg_pool2d(
            checker, torch::nn::functional::AvgPool2dFuncOptions(3).stride(1).padding(1))) < sharpness(checker));
}

TEST_CASE("patch texture is ~1 for images that ignore the grid and grows with per-patch offsets", "[metrics]") {
  shapes::Spec spec;
  auto real = shapes::make_batch(spec, 2, 0, 256).images;
  const double base = patch_texture(real, 4);
  CHECK(base == Approx(1.0).margin(0.15));
  // A per-patch brightness offset (what a generator that draws each 4x4 patch apart produces).
  Rng rng(3);
  auto offsets = 0.1 * rng.randn({256, 1, 8, 8});
  auto textured = real + torch::repeat_interleave(torch::repeat_interleave(offsets, 4, 2), 4, 3);
  CHECK(patch_texture(textured, 4) > 1.5 * base);
  // The same offsets on a grid the metric is not told about count as within-patch detail.
  CHECK(patch_texture(textured, 3) < patch_texture(textured, 4));
  CHECK(patch_texture(torch::zeros({2, 3, 16, 16}), 4) == Approx(1.0));
  CHECK_THROWS_WITH(patch_texture(real, 1), Catch::Contains("patch size 1"));
  CHECK_THROWS_WITH(patch_texture(real.select(0, 0), 4), Catch::Contains("[N, C, H, W]"));
}

TEST_CASE("the shipped Shapes probe recognises real test-split images, noisy ones too", "[metrics][assets]") {
  ProbeNet probe = load_probe(std::string(ATELIER_SOURCE_DIR) + "/assets/models/probe.safetensors");
  shapes::Spec base;
  base.styles = {0, 1, 2, 3, 4};
  base.min_scale = 0.45f;
  auto b = shapes::make_batch(base, 2, 0, 256);
  CHECK(probe_accuracy(probe, b.images, b.labels) >= 0.95);
  Rng rng(1);
  CHECK(probe_accuracy(probe, b.images + 0.1 * rng.randn(b.images.sizes()), b.labels) >= 0.93);
  shapes::Spec glyphs = base;
  glyphs.glyphs = {0, 1, 2, 3, 4};
  auto g = shapes::make_batch(glyphs, 2, 0, 128);
  CHECK(probe_accuracy(probe, g.images, g.labels + 8) >= 0.95);
  // Features separate classes: FD between two halves of one class set is far below FD to glyphs.
  auto same = fd_shapes(probe, b.images.slice(0, 0, 128), b.images.slice(0, 128, 256));
  CHECK(same < fd_shapes(probe, b.images.slice(0, 0, 128), g.images));
  // 64x64 images (a resolution-adapted model's) are resized to the probe's 32 first and recognised as well.
  REQUIRE(probe->options().image_size == 32);
  shapes::Spec large = base;
  large.size = 64;
  auto l = shapes::make_batch(large, 2, 0, 128);
  CHECK(probe->resized(l.images).sizes() == torch::IntArrayRef({128, 3, 32, 32}));
  CHECK(probe_accuracy(probe, l.images, l.labels) >= 0.95);
  CHECK(fd_shapes(probe, l.images, b.images.slice(0, 0, 128)) < fd_shapes(probe, l.images, g.images));
  ProbeNet any_size(ProbeOptions{8});
  CHECK(any_size->resized(l.images).size(2) == 64);
}
