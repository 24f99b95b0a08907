// Test-time prompt tuning of a CLIP-style zero-shot classifier (eval/clip.h), one test image at a time:
//
//   TPT     (Shu et al., NeurIPS 2022): the words of "a photo of a" become learnable context vectors; the
//           image and `views` random resized crops/flips of it (or, as TPT outside ImageNet, AugMix
//           images of such crops: `augment`) are classified, the lowest-entropy
//           `select` fraction of views is kept, and one AdamW step minimises the entropy of their
//           averaged prediction; the prediction on the original follows; the context is reset per image.
//   DiffTPT (Feng et al., ICCV 2023): adds `diffusion_views` made by the diffusion model (here: the base
//           DiT's null label re-noising the test image to `diffusion_t` and denoising it, an unconditional
//           image variation); diffusion views whose prediction is least cosine-similar to the original's
//           are dropped (keep `cosine_keep`), then entropy selection over all views keeps `diff_select`,
//           and `diff_steps` AdamW steps follow.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/rng.h"
#include "eval/clip.h"

namespace atelier {

struct TptSettings {
  std::string prompt_init = "a photo of a";
  std::int64_t views = 63;
  double select = 0.1;
  double lr = 5e-3;
  std::int64_t steps = 1;
  double min_crop = 0.5;
  std::string augment = "crops";  // "crops" or "augmix" (data/augmix.h)
  // DiffTPT
  std::int64_t aug_views = 64;
  std::int64_t diffusion_views = 63;
  std::int64_t diffusion_t = 400;
  std::int64_t diffusion_steps = 10;
  double diffusion_guidance = 0.0;
  double cosine_keep = 0.8;
  double diff_select = 0.3;
  std::int64_t diff_steps = 4;

  template <class V>
  void fields(V& v) {
    v("prompt_init", prompt_init, "TPT/DiffTPT: words whose embeddings start the learnable context");
    v("tpt_views", views, "TPT: augmented views besides the original (TPT: 63)", Range{1, 4096});
    v("tpt_select", select, "TPT: lowest-entropy fraction of the views kept (TPT: 0.1)", Range{0.001, 1});
    v("tpt_lr", lr, "TPT/DiffTPT: AdamW learning rate of the context", Range{0, 10});
    v("tpt_steps", steps, "TPT: optimisation steps per image (TPT: 1)", Range{1, 1000});
    v("min_crop", min_crop, "TPT/DiffTPT: smallest area fraction of a random resized crop", Range{0.05, 1});
    v("tpt_augment", augment,
      "TPT/DiffTPT: the conventional views: crops (random resized crops and flips, TPT on ImageNet) or augmix "
      "(AugMix of such crops, TPT on other datasets)",
      Choices{"crops", "augmix"});
    v("diff_aug_views", aug_views, "DiffTPT: conventional augmented views (DiffTPT: 64)", Range{0, 4096});
    v("diffusion_views", diffusion_views, "DiffTPT: views made by the diffusion model (DiffTPT: 63)", Range{1, 4096});
    v("diffusion_t", diffusion_t, "DiffTPT: timestep a diffusion view re-noises the test image to", Range{1, 100000});
    v("diffusion_steps", diffusion_steps, "DiffTPT: denoising steps of a diffusion view", Range{1, 1000});
    v("diffusion_guidance", diffusion_guidance,
      "DiffTPT: low-pass guidance of a diffusion view toward the test image (as DDA's; 0: a free variation)",
      Range{0, 1000});
    v("cosine_keep", cosine_keep, "DiffTPT: fraction of diffusion views kept by cosine similarity to the original",
      Range{0.001, 1});
    v("diff_select", diff_select, "DiffTPT: lowest-entropy fraction of all views kept (DiffTPT: 0.3)", Range{0.001, 1});
    v("diff_steps", diff_steps, "DiffTPT: optimisation steps per image (DiffTPT: 4)", Range{1, 1000});
  }
};

// `count` diffusion views of one image [3, H, W] -> [count, 3, H, W].
using DiffusionViews = std::function<torch::Tensor(const torch::Tensor& image, std::int64_t count, Rng& rng)>;

// Per image of `images` [N, 3, H, W]: class probabilities [N, K] after TPT (no `diffusion`) or DiffTPT.
// The context restarts from `prompt_init` for every image. Checks `cancel` between images.
torch::Tensor tpt_probs(ClipModel& clip, const std::vector<std::string>& classes, const torch::Tensor& images,
                        const TptSettings& settings, Rng& rng, const DiffusionViews& diffusion = {},
                        const CancelToken* cancel = nullptr);

// `count` random resized crops (area in [min_crop, 1], aspect in [3/4, 4/3]) with random horizontal
// flips of one image [3, H, W], at its size (bilinear): [count, 3, H, W].
torch::Tensor random_views(const torch::Tensor& image, std::int64_t count, double min_crop, Rng& rng);
// The same crops, each then made an AugMix image (severity 1, width 3, as TPT's views).
torch::Tensor augmix_views(const torch::Tensor& image, std::int64_t count, double min_crop, Rng& rng);

}  // namespace atelier
