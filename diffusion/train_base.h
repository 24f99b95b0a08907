// `train_base`: trains a class-conditional DiT on Shapes (pixel space) with AdamW, warm-up, gradient
// clipping, EMA, validation loss, sample grids and exact resume. Writes the EMA weights as a model
// file (safetensors + metadata that `sample` and the adapters read back).
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/shapes.h"
#include "diffusion/dit.h"
#include "diffusion/objective.h"

namespace atelier {

class Rng;

// The Shapes data a job trains on (base classes, target domains and concepts are all Shapes specs).
struct ShapesData {
  std::vector<std::string> classes;  // empty: all 8 base shapes
  std::vector<std::string> glyphs;   // non-empty: draw these concept glyphs instead of shapes
  std::vector<std::string> styles{"flat"};
  double min_scale = 0.55, max_scale = 0.85, jitter = 0.08, rotation = 360;
  bool plain_backgrounds = true;
  std::int64_t seed = 0;

  template <class V>
  void fields(V& v) {
    v("classes", classes, "Shapes classes (empty: all 8)");
    v("glyphs", glyphs, "concept glyphs to draw instead of shapes");
    v("styles", styles, "rendering styles sampled uniformly");
    v("min_scale", min_scale, "smallest shape extent / image size", Range{0.1, 1});
    v("max_scale", max_scale, "largest shape extent / image size", Range{0.1, 1});
    v("jitter", jitter, "max centre offset (fraction of the image)", Range{0, 0.4});
    v("rotation", rotation, "rotation range in degrees around upright (360: any angle; 0: upright)", Range{0, 360});
    v("plain_backgrounds", plain_backgrounds, "solid light backgrounds only");
    v("data_seed", seed, "seed of the procedural dataset", Range{0, 9e15});
  }
  shapes::Spec spec(int size) const;
};

struct TrainBaseConfig {
  std::string model = "DiT-T/4";
  std::int64_t hidden_size = 0;  // 0: preset's
  std::int64_t depth = 0;
  std::int64_t num_heads = 0;
  std::int64_t image_size = 32;
  ShapesData data;
  std::string schedule = "linear";
  std::string prediction = "eps";
  bool learn_sigma = true;
  double class_dropout = 0.1;
  std::int64_t steps = 2000;
  std::int64_t batch = 64;
  double lr = 3e-4;
  std::int64_t warmup = 100;
  double weight_decay = 0.0;
  double grad_clip = 1.0;
  double ema_decay = 0.999;
  std::int64_t seed = 0;
  std::int64_t checkpoint_every = 250;
  std::int64_t val_every = 250;
  std::int64_t sample_every = 1000;
  std::int64_t sample_steps = 50;
  double cfg_scale = 4.0;
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
    v("schedule", schedule, "noise schedule", Choices{"linear", "scaled_linear", "cosine"});
    v("prediction", prediction, "what the network predicts", Choices{"eps", "v", "x0"});
    v("learn_sigma", learn_sigma, "learned-range variance with the hybrid MSE + VB loss");
    v("class_dropout", class_dropout, "label dropout for classifier-free guidance", Range{0, 1});
    v("steps", steps, "optimizer steps", Range{1, 1e9});
    v("batch", batch, "images per step", Range{1, 65536});
    v("lr", lr, "AdamW learning rate (constant after warm-up)", Range{0, 1});
    v("warmup", warmup, "linear warm-up steps", Range{0, 1e9});
    v("weight_decay", weight_decay, "AdamW weight decay", Range{0, 1});
    v("grad_clip", grad_clip, "gradient-norm clip (0: off)", Range{0, 1e6});
    v("ema_decay", ema_decay, "EMA decay of the shipped weights", Range{0, 1});
    v("seed", seed, "seed of initialisation, noise, timesteps and label dropout", Range{0, 9e15});
    v("checkpoint_every", checkpoint_every, "steps between checkpoints", Range{1, 1e9});
    v("val_every", val_every, "steps between validation-loss runs", Range{1, 1e9});
    v("sample_every", sample_every, "steps between preview grids", Range{1, 1e9});
    v("sample_steps", sample_steps, "DDIM steps of the previews", Range{1, 1000});
    v("cfg_scale", cfg_scale, "guidance scale of the previews", Range{0, 100});
    v("output", output, "model file written in the run folder");
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N; a run resumes on any device");
  }
};

void train_base(const TrainBaseConfig& config, JobContext& ctx);

struct DiTModelInfo {
  DiTConfig dit;
  std::string schedule = "linear";
  std::string prediction = "eps";
  std::int64_t num_train_timesteps = 1000;
  std::vector<std::string> class_names;
  json data;  // ShapesData of the training set
};
void save_dit_model(const std::filesystem::path& path, DiT& model, const DiTModelInfo& info, const json& config);
DiT load_dit_model(const std::filesystem::path& path, DiTModelInfo* info = nullptr);

// Class names of a Shapes spec's labels, in label order.
std::vector<std::string> shapes_class_names(const shapes::Spec& spec);

// One training loss on Shapes batch [first, first + batch) of the train split: timesteps, noise and CFG
// label dropout are drawn from `rng` in that order (the order exact resume relies on).
DiffusionObjective::Terms shapes_training_terms(DiT& model, const DiffusionObjective& objective,
                                                const shapes::Spec& spec, std::int64_t first, std::int64_t batch,
                                                Rng& rng);
// The same loss on an already rendered batch (images in [-1, 1] on the CPU, labels), drawing the same
// random numbers: lets a caller time the rendering apart from the network.
DiffusionObjective::Terms training_terms(DiT& model, const DiffusionObjective& objective, const shapes::Batch& data,
                                         Rng& rng);

// `per_class` samples of every class label (DDIM, fixed noise from `seed`), as a labelled PNG grid at
// `path`; returns the images [K * per_class, C, H, W] on the CPU.
torch::Tensor save_class_grid(DiT& model, const DiTModelInfo& info, std::int64_t per_class, std::int64_t steps,
                              double cfg_scale, std::uint64_t seed, const std::filesystem::path& path,
                              const std::string& title);

// A trained model file: DiT weights + how to run it.
}  // namespace atelier
