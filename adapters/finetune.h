// The `difffit` job: adapts a DiT base model to a target domain (a Shapes domain, or a folder of images
// with one sub-folder per class) with DiffFit or one of its baselines (BitFit, full fine-tuning, LoRA)
// under the same data, steps, batch and evaluation, optionally at a larger resolution (positional grid
// scaled to the base's). Writes before/after grids, the adapter file, metrics.json (FD-shapes against the
// target's real images and probe accuracy (when the probe knows the classes) before/after, trainable
// fraction, adapter size, steps/s, peak memory) and, with "fold", a standalone model.
#pragma once
#include <string>

#include "adapters/tuning.h"
#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"
#include "data/shapes_data.h"
#include "diffusion/model_file.h"

namespace atelier {

struct FineTuneConfig {
  std::string base = "assets/models/dit_shapes.safetensors";
  std::string images;
  TuneSettings tune;
  ShapesData data;
  std::int64_t image_size = 0;
  TrainSchedule train{.steps = 300, .batch = 32, .warmup = 0, .grad_clip = 1.0, .checkpoint_every = 100};
  double lr = 1e-4;
  double lr_scale = 10.0;
  LrDecay lr_decay = LrDecay::Constant;
  LabelInit label_init = LabelInit::Random;
  double ema_decay = 0.99;
  std::int64_t seed = 0;
  PreviewSettings preview{.sample_every = 100, .sample_steps = 50, .cfg_scale = 3.0};
  std::int64_t eval_per_class = 16;
  std::string probe = "assets/models/probe.safetensors";
  std::int64_t reference_samples = 512;
  std::string output = "adapter.safetensors";
  bool fold = false;
  bool dry_run = false;
  std::string device = "auto";
  std::string tokenizer = "assets/text/bpe_simple_vocab_16e6.txt.gz";

  template <class V>
  void fields(V& v) {
    v("base", base,
      "base model: an Atelier DiT file, a preset name (random weights; dry_run only), or Stable Diffusion (difffit or "
      "bitfit of its UNet from the captioned images of 'images')",
      Input::Model);
    v("images", images,
      "folder of target images: one sub-folder per class (a flat folder is one class named after it), the Shapes "
      "fields (classes, glyphs, styles, ...) then ignored; empty: the Shapes target below",
      Input::ImageFolder);
    tune.fields(v);
    data.fields(v);
    v("image_size", image_size, "training size (0: the base's; larger: resolution adaptation)", Range{0, 1024});
    train.fields(v);
    v("lr", lr, "AdamW learning rate of full fine-tuning", Range{0, 1});
    v("lr_scale", lr_scale, "learning-rate factor of DiffFit/BitFit/LoRA tensors (DiffFit: 10)", Range{0, 1e4});
    v("lr_decay", lr_decay, "learning rate after warm-up: constant, or a cosine decay to 0 at the last step");
    v("label_init", label_init,
      "label rows of classes new to the base start as: random (N(0, 0.02)), mean (of the base's class rows) or "
      "null (the base's unconditional row)");
    v("ema_decay", ema_decay, "EMA decay of the trained tensors (the adapter holds the EMA)", Range{0, 1});
    v("seed", seed, "seed of new label rows, LoRA init, noise, timesteps and label dropout", Range{0, 9e15});
    preview.fields(v);
    v("eval_per_class", eval_per_class, "samples per class for the before/after metrics", Range{1, 4096});
    v("probe", probe, "Shapes probe for metrics (empty: none)", Input::File);
    v("reference_samples", reference_samples, "real test-split images for FD-shapes", Range{16, 1e6});
    v("output", output, "adapter file written in the run folder", OutputFile{".safetensors"});
    v("fold", fold, "also write model.safetensors: the base with the adapter folded in");
    v("dry_run", dry_run, "report the trainable parameters and stop");
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
    v("tokenizer", tokenizer, "Stable Diffusion bases: CLIP BPE vocabulary (a diffusers folder's own first)",
      Input::File);
  }
};

void finetune_job(const FineTuneConfig& config, JobContext& ctx);

// Base model with adapters applied, for `sample` and `fold`: loads `base`, applies each adapter at its
// weight (Atelier adapters hash-checked; PEFT and kohya LoRA files matched to the base layer by layer), LoRA updates
// scaled per DiT block by `block_weights` (empty: 1). `loras` receives the LoRA sets applied (for folding); may be
// null.
DiT load_adapted_model(const std::string& base, const std::vector<std::string>& adapters,
                       const std::vector<double>& weights, DiTModelInfo* info,
                       std::vector<std::pair<LoRA, double>>* loras = nullptr,
                       const std::vector<double>& block_weights = {});

}  // namespace atelier
