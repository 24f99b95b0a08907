// `train_base`: trains a class-conditional DiT on Shapes or a folder of class sub-folders (pixel space) with AdamW,
// warm-up, gradient clipping, EMA, validation loss, sample grids and exact resume (core/train_loop.h). Writes the EMA
// weights as a model file (diffusion/model_file.h) that `sample` and the adapters read back.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"
#include "data/shapes_data.h"
#include "diffusion/dit.h"
#include "diffusion/model_file.h"
#include "diffusion/objective.h"

namespace atelier {

class Rng;

struct TrainBaseConfig {
  std::string model = "DiT-T/4";
  std::int64_t hidden_size = 0;  // 0: preset's
  std::int64_t depth = 0;
  std::int64_t num_heads = 0;
  std::int64_t image_size = 32;
  ShapesData data;
  std::string images;  // a folder of the user's images instead of Shapes
  std::string schedule = "linear";
  std::string prediction = "eps";
  bool learn_sigma = true;
  bool final_conv = false;
  double class_dropout = 0.1;
  TrainSchedule train{.steps = 2000, .batch = 64, .warmup = 100, .grad_clip = 1.0, .checkpoint_every = 250};
  double lr = 3e-4;
  double weight_decay = 0.0;
  double ema_decay = 0.999;
  std::int64_t seed = 0;
  std::int64_t val_every = 250;
  PreviewSettings preview{.sample_every = 1000, .sample_steps = 50, .cfg_scale = 3.0};
  std::string output = "model.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("model", model, "DiT preset (DiT-XL/2 ... DiT-S/8, tiny DiT-T/2, DiT-T/4)");
    v("hidden_size", hidden_size, "override the preset's width (0: preset)", Range{0, 8192});
    v("depth", depth, "override the preset's depth (0: preset)", Range{0, 128});
    v("num_heads", num_heads, "override the preset's heads (0: preset)", Range{0, 128});
    v("image_size", image_size, "training image size (pixel space)", Range{8, 1024});
    data.fields(v);
    v("images", images,
      "folder of training images: one sub-folder per class (a flat folder is one class named after it), the "
      "Shapes fields are then ignored; empty: Shapes",
      Input::ImageFolder);
    v("schedule", schedule, "noise schedule", Choices{"linear", "scaled_linear", "cosine"});
    v("prediction", prediction, "what the network predicts", Choices{"eps", "v", "x0"});
    v("learn_sigma", learn_sigma, "learned-range variance with the hybrid MSE + VB loss");
    v("final_conv", final_conv,
      "residual 3x3 convolution across patch borders after the last layer (removes the "
      "patch texture; Atelier only, not in official DiT checkpoints)");
    v("class_dropout", class_dropout, "label dropout for classifier-free guidance", Range{0, 1});
    train.fields(v);
    v("lr", lr, "AdamW learning rate (constant after warm-up)", Range{0, 1});
    v("weight_decay", weight_decay, "AdamW weight decay", Range{0, 1});
    v("ema_decay", ema_decay, "EMA decay of the shipped weights", Range{0, 1});
    v("seed", seed, "seed of initialisation, noise, timesteps and label dropout", Range{0, 9e15});
    v("val_every", val_every, "steps between validation-loss runs", Range{1, 1e9});
    preview.fields(v);
    v("output", output, "model file written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N; a run resumes on any device");
  }
};

void train_base(const TrainBaseConfig& config, JobContext& ctx);

// One training loss on Shapes batch [first, first + batch) of the train split: timesteps, noise and CFG
// label dropout are drawn from `rng` in that order (the order exact resume relies on).
DiffusionObjective::Terms shapes_training_terms(DiT& model, const DiffusionObjective& objective,
                                                const shapes::Spec& spec, std::int64_t first, std::int64_t batch,
                                                Rng& rng);
// The same loss on an already rendered batch (images in [-1, 1] on the CPU, labels), drawing the same
// random numbers: lets a caller time the rendering apart from the network. In a data-parallel run `data`
// holds this rank's rows of the global batch: the random numbers are drawn for the global batch (as one
// process draws them) and the rank's rows kept.
DiffusionObjective::Terms training_terms(DiT& model, const DiffusionObjective& objective, const shapes::Batch& data,
                                         Rng& rng, const Shard& shard = {});

}  // namespace atelier
