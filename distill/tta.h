// Diffusion-driven test-time adaptation of a classifier that meets shifted images (noise, blur, weather,
// compression), without labels:
//
//   DDA  (Gao et al., CVPR 2023)  projects each test image back toward the training domain: noise it to
//        t ~ 500 of 1000, then denoise with the base model's unconditional (null-label) branch while
//        guiding every step toward the input's low frequencies (the gradient of
//        ||up(down(x)) - up(down(x0_hat))|| with respect to x_t, down/up by `downsample`). The classifier
//        sees the projection; self-ensembling sums its probabilities on the original and the projection.
//   SDA  (CVPR 2025)  aligns the classifier to the projected domain instead: synthetic labelled images of
//        the conditional base model (guidance 1.0), passed through the same projection, fine-tune a copy of
//        the source classifier (`tta_sda`); the prediction is source(x) + fine-tuned(projected x).
//
// The subject is a Shapes classifier (eval/probe.h: the probe, or one trained like it), read on the classes
// of the test set. `tta_eval` runs the chosen methods over Shapes-C (data/corruptions.h) or an image
// folder and writes a results table (JSON + markdown) and a grid of original / corrupted / projected images.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/rng.h"
#include "core/train_loop.h"
#include "data/corruptions.h"
#include "data/shapes_data.h"
#include "diffusion/dit.h"
#include "diffusion/generate.h"
#include "diffusion/model_file.h"
#include "distill/tpt.h"
#include "eval/probe.h"

namespace atelier {

// The DDA projection (the paper's settings on the 1000-step schedule). `guidance` is per image: the
// gradient of a norm has unit length, so a scale moves a 32x32 image's pixels ~8x further than a 256x256
// one's, and DDA's 6 is shared by a batch. 3 was best of {1, 3, 6} on Shapes-C severity 5 (32 images per
// corruption, 9 corruptions; bench/README.md).
struct ProjectionSettings {
  std::int64_t start = 500;
  std::int64_t steps = 50;
  std::int64_t downsample = 4;
  double guidance = 3.0;
  double eta = 1.0;
  std::int64_t batch = 64;

  template <class V>
  void fields(V& v) {
    v("project_t", start, "timestep the input is noised to (of the model's training steps; DDA: ~500 of 1000)",
      Range{1, 100000});
    v("project_steps", steps, "denoising steps of the projection, from project_t to 0 (DDA: 50)", Range{1, 1000});
    v("downsample", downsample, "low-pass factor of the guidance: images are compared after down/up by it",
      Range{1, 64});
    v("guidance", guidance, "step along the gradient of the low-frequency distance at every step (0: none)",
      Range{0, 1000});
    v("project_eta", eta, "noise of each projection step (1: ancestral, DDPM posterior variance; 0: DDIM)",
      Range{0, 1});
    v("project_batch", batch, "images projected at once", Range{1, 4096});
  }
};

// Projects `images` [N, C, H, W] in [-1, 1] (on any device; the model's device is used) with the model's
// null label. Returns the projections on the CPU. Checks `cancel` between batches.
torch::Tensor dda_project(DiT& model, const DiTModelInfo& info, const torch::Tensor& images,
                          const ProjectionSettings& settings, Rng& rng, const CancelToken* cancel = nullptr);

// A Shapes classifier read on a list of class names (its logits for those labels only).
struct ShapesClassifier {
  ProbeNet net{nullptr};
  torch::Tensor labels;  // [K] int64: probe label of each class
  std::vector<std::string> classes;

  // Error naming `field` when a class is not one the classifier knows.
  static ShapesClassifier load(const std::string& path, const std::vector<std::string>& classes,
                               const std::string& field);
  torch::Tensor logits(const torch::Tensor& images);  // [N, K], no grad, batched
  torch::Tensor probs(const torch::Tensor& images) { return torch::softmax(logits(images), 1); }
};

struct SdaConfig {
  std::string model = "assets/models/dit_shapes.safetensors";
  std::string classifier = "assets/models/classifier_shapes.safetensors";
  std::vector<std::string> classes;
  std::int64_t per_class = 32;
  SamplerSettings sampler{.steps = 30, .cfg_scale = 1.0};
  ProjectionSettings projection;
  TrainSchedule train{.steps = 300, .batch = 32, .warmup = 0, .grad_clip = 1.0, .checkpoint_every = 100};
  double lr = 1e-4;
  double weight_decay = 1e-4;
  std::int64_t seed = 0;
  std::string output = "sda_classifier.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("model", model, "the base diffusion model (Atelier DiT) that makes and projects the synthetic data",
      Input::Model);
    v("classifier", classifier, "the source classifier: a Shapes probe file", Input::File);
    v("classes", classes, "classes to synthesise and align (empty: every class of the model)", Input::Classes);
    v("per_class", per_class, "synthetic images per class (SDA: 50)", Range{1, 100000});
    v("sampler", sampler.sampler, "sampler of the synthetic images",
      Choices{"ddpm", "ddim", "euler", "euler_a", "dpmpp_2m"});
    v("sample_steps", sampler.steps, "sampling steps of the synthetic images", Range{1, 1000});
    v("cfg_scale", sampler.cfg_scale, "guidance of the synthetic images (SDA: 1.0, no guidance)", Range{0, 100});
    projection.fields(v);
    train.fields(v);
    v("lr", lr, "AdamW learning rate of the fine-tuned classifier", Range{0, 1});
    v("weight_decay", weight_decay, "AdamW weight decay", Range{0, 1});
    v("seed", seed, "seed of the synthetic data, projection and batches", Range{0, 9e15});
    v("output", output, "fine-tuned classifier written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};
// `tta_sda`: synthetic data -> projection (saved, so a resumed run skips both) -> fine-tuning with exact
// resume -> the fine-tuned classifier (a probe file with its source recorded) and its accuracy on the
// projected synthetic set.
void sda_job(const SdaConfig& config, JobContext& ctx);

// Methods tta_eval runs: on the source classifier, and on the CLIP-style zero-shot classifier.
inline const std::vector<std::string>& tta_method_names() {
  static const std::vector<std::string> names = {"source", "dda", "dda_ensemble", "sda", "zero_shot", "tpt", "difftpt"};
  return names;
}

struct TtaEvalConfig {
  std::string model = "assets/models/dit_shapes.safetensors";
  std::string classifier = "assets/models/classifier_shapes.safetensors";
  std::string sda_classifier;
  std::string clip = "assets/models/clip_shapes.safetensors";
  std::vector<std::string> methods{"source", "dda", "dda_ensemble"};
  std::string images;
  ShapesData data;  // classes empty: the model's own training data
  std::vector<std::string> corruptions;
  std::int64_t severity = 5;
  std::int64_t count = 64;
  bool clean = true;
  ProjectionSettings projection;
  TptSettings tpt;
  std::int64_t grid_per_set = 4;
  std::int64_t seed = 0;
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("model", model, "the base diffusion model (Atelier DiT) whose null label projects test images", Input::Model);
    v("classifier", classifier, "the source classifier: a Shapes probe file", Input::File);
    v("sda_classifier", sda_classifier, "the classifier a tta_sda run fine-tuned (needed by the sda method)",
      Input::File);
    v("clip", clip, "the zero-shot classifier of zero_shot, tpt and difftpt: a train_clip model file", Input::File);
    v("methods", methods,
      "methods to run: source, dda, dda_ensemble, sda (the classifier); zero_shot, tpt, difftpt (the CLIP model)",
      Choices(tta_method_names()));
    v("images", images,
      "test images: a folder with one sub-folder per class, or one sub-folder per test set each holding class "
      "sub-folders (as `atelier shapes --corruption all` writes); empty: Shapes-C",
      Input::Folder);
    data.fields(v,
                "Shapes classes of the test set (empty, with glyphs empty too: the model's own training data, "
                "whose settings replace the other data fields)");
    v("corruptions", corruptions, "Shapes-C corruptions (empty: all 15)", Choices(corruption_names()));
    v("severity", severity, "Shapes-C severity", Range{1, 5});
    v("count", count, "test images per set (Shapes test split; the first of a folder)", Range{1, 1e6});
    v("clean", clean, "also evaluate the uncorrupted Shapes test images");
    projection.fields(v);
    tpt.fields(v);
    v("grid_per_set", grid_per_set, "images per set shown in grid.png (original, corrupted, projected)", Range{0, 64});
    v("seed", seed, "seed of the corruptions and the projection noise", Range{0, 9e15});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};
// `tta_eval`: per test set and method, accuracy and seconds per image; results.json, results.md, grid.png.
// Each finished set is recorded in sets.json (its grid images in sets/<name>.grid, safetensors inside), so a
// resumed run skips it.
void tta_eval_job(const TtaEvalConfig& config, JobContext& ctx);

}  // namespace atelier
