// Image folders as datasets: either one sub-folder per class (root/<class>/*.png) or a flat folder of
// images with optional captions in <image>.txt. Images are resized (shorter side), centre-cropped to a
// square and optionally flipped.
#pragma once
#include <torch/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/rng.h"

namespace atelier {

class FolderDataset {
 public:
  struct Item {
    std::filesystem::path image;
    std::int64_t label = 0;  // index into classes(); 0 for a flat folder
    std::string caption;     // from <image>.txt, else empty
  };

  // Scans `root` (sorted, deterministic). Throws Error naming the folder if it is missing or holds no
  // PNG/JPEG/BMP images.
  static FolderDataset scan(const std::filesystem::path& root);

  std::size_t size() const { return items_.size(); }
  const std::vector<Item>& items() const { return items_; }
  const std::vector<std::string>& classes() const { return classes_; }
  const std::filesystem::path& root() const { return root_; }

  // [3, size, size] in [-1, 1]; flipped horizontally when `flip`.
  torch::Tensor load(std::size_t index, int size, bool flip = false) const;
  // [N, 3, size, size] and labels [N]; with `rng`, each image is flipped with probability 1/2.
  std::pair<torch::Tensor, torch::Tensor> batch(const std::vector<std::size_t>& indices, int size,
                                                Rng* rng = nullptr) const;

 private:
  std::filesystem::path root_;
  std::vector<Item> items_;
  std::vector<std::string> classes_;
};

bool is_image_file(const std::filesystem::path& path);

}  // namespace atelier
