#include "data/training_images.h"

#include <torch/torch.h>

#include <numeric>

#include "core/report.h"
#include "core/rng.h"
#include "data/folder_dataset.h"
#include "data/shapes_data.h"

namespace atelier {

TrainingImages TrainingImages::from_shapes(const shapes::Spec& spec) {
  TrainingImages t;
  t.spec_ = spec;
  t.classes_ = shapes_class_names(spec);
  return t;
}

TrainingImages TrainingImages::from_folder(const std::string& root, int size, std::uint64_t seed) {
  const FolderDataset folder = FolderDataset::scan(root);
  std::vector<std::size_t> all(folder.size());
  std::iota(all.begin(), all.end(), std::size_t{0});
  TrainingImages t;
  std::tie(t.images_, t.labels_) = folder.batch(all, size);
  t.folder_ = root;
  t.seed_ = seed;
  for (const auto& name : folder.classes()) t.classes_.push_back(printable(name, false));
  return t;
}

torch::Tensor epoch_positions(std::int64_t size, std::uint64_t seed, std::int64_t first, std::int64_t n) {
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(n));
  torch::Tensor perm;
  for (std::int64_t i = first, epoch = -1; i < first + n; ++i) {
    if (i / size != epoch) {
      epoch = i / size;
      Rng rng(seed ^ (0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(epoch + 1)));
      perm = torch::randperm(size, rng.generator(), torch::kLong);
    }
    out.push_back(perm[i % size].item<std::int64_t>());
  }
  return torch::tensor(out, torch::kLong);
}

shapes::Batch TrainingImages::batch(std::int64_t first, std::int64_t n) const {
  if (spec_) return shapes::make_batch(*spec_, 0, first, n);
  const auto idx = epoch_positions(images_.size(0), seed_, first, n);
  return {images_.index_select(0, idx), labels_.index_select(0, idx), {}};
}

shapes::Batch TrainingImages::folder_subset(std::int64_t n) const {
  return batch(0, std::min(n, images_.size(0)));
}

}  // namespace atelier
