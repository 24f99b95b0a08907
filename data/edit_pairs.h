// Edit pairs: what an image-to-image student (E2GAN) learns from. Each pair is an input image and the
// diffusion teacher's edit of it; a ground-truth restyle (the same Shapes scene rendered in the target
// style) may sit beside it as a second, independent reference. Stored as one safetensors file:
//
//   <set>.input / <set>.teacher / <set>.truth   uint8 [N, 3, H, W]  (truth optional)
//   <set>.label                                  int64 [N]          (class of the input, -1 unknown)
//   metadata "atelier.kind" = "edit_pairs", "edit" (its name), "classes" (JSON list), "info" (JSON)
//
// with <set> "train" and "val" (held-out inputs for fidelity metrics).
#pragma once
#include <torch/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"

namespace atelier {

struct PairSet {
  torch::Tensor input, teacher, truth;  // float [N, 3, H, W] in [-1, 1] (truth undefined when absent)
  torch::Tensor label;                  // int64 [N]
  std::int64_t size() const { return input.defined() ? input.size(0) : 0; }
  PairSet subset(const torch::Tensor& indices) const;
};

struct EditPairs {
  std::string edit;
  std::vector<std::string> classes;
  json info;  // how they were made (teacher, adapter, strength, sampler, ...)
  PairSet train, val;
};

// Writes atomically (images quantised to uint8, as PNG files would hold them).
void save_edit_pairs(const std::filesystem::path& path, const EditPairs& pairs);
// Error naming the file when it is not an edit-pairs file or a tensor is missing or mis-shaped.
EditPairs load_edit_pairs(const std::filesystem::path& path);

// [-1, 1] float <-> uint8 (round half up, clamped).
torch::Tensor to_uint8_image(const torch::Tensor& x);
torch::Tensor from_uint8_image(const torch::Tensor& x);

}  // namespace atelier
