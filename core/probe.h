// The Shapes probe: a small CNN that recognises Shapes classes, concept glyphs and rendering styles.
// Its pooled features drive FD-shapes and concept-identity metrics; its predictions give classifier
// accuracy of generated samples. Trained by the `train_probe` job (with noise/blur augmentation so it
// stays reliable on imperfect generated images).
#pragma once
#include <torch/torch.h>

#include <string>

#include "core/config.h"
#include "core/job.h"

namespace atelier {

struct ProbeOptions {
  int width = 16;  // channels of the first stage; stages use width, 2*width, 4*width
  // Size the probe was trained at: images of another size are resized to it first (area averaging when
  // larger, bilinear when smaller), as FID resizes to Inception's 299. 0: use images as they come.
  int image_size = 0;
};

// Labels: 0-7 Shapes classes, 8-12 concept glyphs.
int probe_num_labels();
std::string probe_label_name(int label);

class ProbeNetImpl : public torch::nn::Module {
 public:
  explicit ProbeNetImpl(ProbeOptions options = {});
  torch::Tensor features(const torch::Tensor& x);       // [N, 3, H, W] in [-1, 1] -> [N, 4*width]
  torch::Tensor resized(const torch::Tensor& x) const;  // to options().image_size (see ProbeOptions)
  // Returns {label_logits [N, 13], style_logits [N, 5]}.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x);
  const ProbeOptions& options() const { return options_; }

 private:
  ProbeOptions options_;
  torch::nn::Sequential features_{nullptr};
  torch::nn::Linear label_head_{nullptr}, style_head_{nullptr};
};
TORCH_MODULE(ProbeNet);

struct ProbeConfig {
  std::int64_t steps = 1200;
  std::int64_t batch = 64;
  double lr = 2e-3;
  double weight_decay = 1e-4;
  std::int64_t seed = 0;
  std::int64_t image_size = 32;
  std::int64_t width = 16;
  double noise_aug = 0.12;
  double blur_prob = 0.3;
  std::int64_t eval_every = 300;
  std::int64_t checkpoint_every = 200;
  std::int64_t val_samples = 512;
  std::string output = "probe.safetensors";

  template <class V>
  void fields(V& v) {
    v("steps", steps, "optimizer steps", Range{1, 1e8});
    v("batch", batch, "images per step", Range{1, 4096});
    v("lr", lr, "AdamW learning rate (cosine decay after 5% warm-up)", Range{0, 1});
    v("weight_decay", weight_decay, "AdamW weight decay", Range{0, 1});
    v("seed", seed, "seed of the initialisation, data order and augmentation", Range{0, 9e15});
    v("image_size", image_size, "Shapes image size", Range{16, 256});
    v("width", width, "channels of the first stage (features = 4*width)", Range{4, 256});
    v("noise_aug", noise_aug, "max std of Gaussian noise added to training images", Range{0, 2});
    v("blur_prob", blur_prob, "probability of blurring a training image", Range{0, 1});
    v("eval_every", eval_every, "steps between validation runs", Range{1, 1e8});
    v("checkpoint_every", checkpoint_every, "steps between checkpoints", Range{1, 1e8});
    v("val_samples", val_samples, "validation images", Range{16, 1e6});
    v("output", output, "weights file written in the run folder");
  }
};

void train_probe(const ProbeConfig& config, JobContext& ctx);

struct ProbeAccuracy {
  double label = 0, style = 0;
};
// Accuracy on `images` [N, 3, H, W] against labels/styles (batched, no grad).
ProbeAccuracy probe_accuracy(ProbeNet& net, const torch::Tensor& images, const torch::Tensor& labels,
                             const torch::Tensor& styles);
// Loads a probe written by train_probe (width and image size from its metadata).
ProbeNet load_probe(const std::filesystem::path& path);

}  // namespace atelier
