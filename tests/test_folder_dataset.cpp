#include <catch2/catch.hpp>

#include "core/atomic_file.h"
#include "core/image.h"
#include "data/folder_dataset.h"
#include "tests/helpers.h"

using namespace atelier;

namespace {
void write_image(const std::filesystem::path& p, int w, int h, float value) {
  std::filesystem::create_directories(p.parent_path());
  save_png(p, tensor_to_image(torch::full({3, h, w}, value)));
}
}  // namespace

TEST_CASE("class sub-folders become labels, images are resized and centre-cropped", "[dataset]") {
  test::TempDir dir;
  write_image(dir / "cats/a.png", 40, 20, 0.5f);
  write_image(dir / "cats/b.png", 20, 20, 0.5f);
  write_image(dir / "dogs/c.png", 16, 32, -0.5f);
  write_file_atomic(dir / "dogs/c.txt", "a dog\n");
  write_file_atomic(dir / "dogs/notes.md", "ignored");
  auto d = FolderDataset::scan(dir.path());
  REQUIRE(d.size() == 3);
  CHECK(d.classes() == std::vector<std::string>{"cats", "dogs"});
  CHECK(d.items()[2].label == 1);
  CHECK(d.items()[2].caption == "a dog");
  auto [x, y] = d.batch({0, 1, 2}, 8);
  CHECK(x.sizes() == torch::IntArrayRef({3, 3, 8, 8}));
  CHECK(y.equal(torch::tensor({0, 0, 1}, torch::kLong)));
  CHECK(x[2].mean().item<float>() == Approx(-0.5).margin(0.01));
}

TEST_CASE("a flat folder is one class; empty or missing folders are errors naming them", "[dataset]") {
  test::TempDir dir;
  write_image(dir / "flat/x.jpg.png", 8, 8, 0.f);
  auto d = FolderDataset::scan(dir / "flat");
  CHECK(d.size() == 1);
  CHECK(d.classes() == std::vector<std::string>{"flat"});
  CHECK(FolderDataset::scan((dir / "flat").string() + "/").classes() == std::vector<std::string>{"flat"});
  std::filesystem::create_directories(dir / "empty/sub");
  CHECK_THROWS_WITH(FolderDataset::scan(dir / "empty"), Catch::Contains("empty") && Catch::Contains("no images"));
  CHECK_THROWS_WITH(FolderDataset::scan(dir / "missing"), Catch::Contains("does not exist"));
}
