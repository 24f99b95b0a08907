// The Shapes probe: a small CNN that recognises Shapes classes, concept glyphs and rendering styles.
// Its pooled features drive FD-shapes and concept-identity metrics; its predictions give classifier
// accuracy of generated samples. Trained by the `train_probe` job (with noise/blur augmentation so it
// stays reliable on imperfect generated images, eval/train_probe.h). Labels: eval/labels.h.
#pragma once
#include <torch/torch.h>

#include <string>

#include "eval/labels.h"

namespace atelier {

struct ProbeOptions {
  int width = 16;  // channels of the first stage; stages use width, 2*width, 4*width
  // Size the probe was trained at: images of another size are resized to it first (area averaging when
  // larger, bilinear when smaller), as FID resizes to Inception's 299. 0: use images as they come.
  int image_size = 0;
};

class ProbeNetImpl : public torch::nn::Module {
 public:
  explicit ProbeNetImpl(ProbeOptions options = {});
  torch::Tensor features(const torch::Tensor& x);       // [N, 3, H, W] in [-1, 1] -> [N, 4*width]
  torch::Tensor resized(const torch::Tensor& x) const;  // to options().image_size (see ProbeOptions)
  // Returns {label_logits [N, probe_num_labels()], style_logits [N, styles]}.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x);
  const ProbeOptions& options() const { return options_; }

 private:
  ProbeOptions options_;
  torch::nn::Sequential features_{nullptr};
  torch::nn::Linear label_head_{nullptr}, style_head_{nullptr};
};
TORCH_MODULE(ProbeNet);

struct ProbeAccuracy {
  double label = 0, style = 0;
};
// Accuracy on `images` [N, 3, H, W] against labels/styles (batched, no grad).
ProbeAccuracy probe_accuracy(ProbeNet& net, const torch::Tensor& images, const torch::Tensor& labels,
                             const torch::Tensor& styles);
// Loads a probe written by train_probe (width and image size from its metadata).
ProbeNet load_probe(const std::filesystem::path& path);

}  // namespace atelier
