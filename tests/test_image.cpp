#include <catch2/catch.hpp>

#include "core/image.h"
#include "tests/helpers.h"

using namespace atelier;

TEST_CASE("PNG round trip keeps pixels and text chunks", "[image]") {
  test::TempDir dir;
  auto t = torch::rand({3, 9, 7}) * 2 - 1;
  Image img = tensor_to_image(t);
  save_png(dir / "a.png", img, {{"atelier.config", "{\"seed\":1}"}, {"note", "hi"}});
  Image back = load_image(dir / "a.png");
  CHECK(back.width == 7);
  CHECK(back.height == 9);
  CHECK(back.pixels == img.pixels);
  auto text = read_png_text(dir / "a.png");
  CHECK(text.at("atelier.config") == "{\"seed\":1}");
  CHECK(text.at("note") == "hi");
  CHECK(test::max_abs_diff(image_to_tensor(back), t) <= 1.0 / 127.5 + 1e-6);
}

TEST_CASE("JPEG saves and loads approximately", "[image]") {
  test::TempDir dir;
  auto t = torch::zeros({3, 16, 16});
  t[0] = 0.5;
  save_jpeg(dir / "a.jpg", tensor_to_image(t));
  auto back = image_to_tensor(load_image(dir / "a.jpg"));
  CHECK(test::max_abs_diff(back, t) < 0.1);
}

TEST_CASE("grids place cells and labels", "[image]") {
  auto imgs = torch::ones({5, 3, 8, 8});
  GridOptions o;
  o.columns = 3;
  o.padding = 1;
  Image g = make_grid(imgs, o);
  CHECK(g.width == 3 * 9 + 1);
  CHECK(g.height == 2 * 9 + 1);
  o.row_labels = {"first", "second"};
  o.title = "title";
  Image labelled = make_grid(imgs, o);
  CHECK(labelled.width > g.width);
  CHECK(labelled.height > g.height);
  CHECK_THROWS_WITH(make_grid(torch::ones({3, 8, 8})), Catch::Contains("[N, C, H, W]"));
}

TEST_CASE("bad images name the file", "[image]") {
  test::TempDir dir;
  std::FILE* f = std::fopen((dir / "bad.png").c_str(), "wb");
  std::fputs("\x89PNG\r\n\x1a\nnot really", f);
  std::fclose(f);
  CHECK_THROWS_WITH(load_image(dir / "bad.png"), Catch::Contains("bad.png"));
  CHECK_THROWS_WITH(load_image(dir / "missing.png"), Catch::Contains("missing.png"));
}
