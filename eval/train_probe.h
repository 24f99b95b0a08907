// `train_probe`: trains the Shapes probe (eval/probe.h) on base shapes and concept glyphs in every style,
// with noise and blur augmentation, a cosine learning rate after a 5% warm-up, validation accuracy
// (clean and noisy) and exact resume. Writes the weights with their width and image size as metadata.
#pragma once
#include <string>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"

namespace atelier {

struct ProbeConfig {
  TrainSchedule schedule{.steps = 1200, .batch = 64, .warmup = 60, .grad_clip = 1.0, .checkpoint_every = 200};
  double lr = 2e-3;
  double weight_decay = 1e-4;
  std::int64_t seed = 0;
  std::int64_t image_size = 32;
  std::int64_t width = 16;
  double noise_aug = 0.12;
  double blur_prob = 0.3;
  std::int64_t eval_every = 300;
  std::int64_t val_samples = 512;
  std::string output = "probe.safetensors";

  template <class V>
  void fields(V& v) {
    schedule.fields(v);
    v("lr", lr, "AdamW learning rate (cosine decay to 0 after the warm-up)", Range{0, 1});
    v("weight_decay", weight_decay, "AdamW weight decay", Range{0, 1});
    v("seed", seed, "seed of the initialisation, data order and augmentation", Range{0, 9e15});
    v("image_size", image_size, "Shapes image size", Range{16, 256});
    v("width", width, "channels of the first stage (features = 4*width)", Range{4, 256});
    v("noise_aug", noise_aug, "max std of Gaussian noise added to training images", Range{0, 2});
    v("blur_prob", blur_prob, "probability of blurring a training image", Range{0, 1});
    v("eval_every", eval_every, "steps between validation runs", Range{1, 1e8});
    v("val_samples", val_samples, "validation images", Range{16, 1e6});
    v("output", output, "weights file written in the run folder", OutputFile{".safetensors"});
  }
};
void train_probe(const ProbeConfig& config, JobContext& ctx);

}  // namespace atelier
