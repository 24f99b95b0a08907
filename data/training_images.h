// The images a training job learns from: a Shapes domain (rendered on demand), or every image of a
// folder (FolderDataset, loaded once at the training size) served in seeded epochs. Batches are a
// function of their position alone, so a resumed run sees exactly the batches it would have seen.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/shapes.h"

namespace atelier {

// Dataset positions first .. first + n - 1 of an endless run of epochs over `size` items, each epoch a
// permutation drawn from (seed, epoch): a function of the position alone, so a resumed run sees the same
// batches. [n] int64.
torch::Tensor epoch_positions(std::int64_t size, std::uint64_t seed, std::int64_t first, std::int64_t n);

class TrainingImages {
 public:
  static TrainingImages from_shapes(const shapes::Spec& spec);
  // Throws Error naming the folder when it is missing or holds no images (data/folder_dataset.h).
  static TrainingImages from_folder(const std::string& root, int size, std::uint64_t seed);

  bool is_folder() const { return !spec_; }
  const std::optional<shapes::Spec>& spec() const { return spec_; }
  const std::string& folder() const { return folder_; }
  // Class names: the Shapes domain's labels, or the folder's class sub-folders (escaped to printable
  // UTF-8, since they go into JSON metadata).
  const std::vector<std::string>& classes() const { return classes_; }
  // Folder images [N, 3, S, S] in [-1, 1] and labels [N] (undefined for Shapes).
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

  // Training images [first, first + n): Shapes' train split, or folder positions in an endless run of
  // epochs, each a permutation drawn from (seed, epoch).
  shapes::Batch batch(std::int64_t first, std::int64_t n) const;
  // Up to `n` folder images with their labels, a seeded random subset (every image when there are fewer).
  shapes::Batch folder_subset(std::int64_t n) const;

 private:
  std::optional<shapes::Spec> spec_;
  std::string folder_;
  torch::Tensor images_, labels_;
  std::vector<std::string> classes_;
  std::uint64_t seed_ = 0;
};

}  // namespace atelier
