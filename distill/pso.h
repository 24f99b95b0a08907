// The `pso` job: fine-tunes a few-step model (a distill_steps student) on a handful of target images
// with pairwise sample optimization (distill/pso_loss.h), or naively with the plain diffusion loss (the
// baseline that blurs few-step models), with LoRA (default, rank 16) or DiffFit tensors. Targets are an
// image folder with one sub-folder per class of the model, or the model's own Shapes classes drawn in
// another rendering style. References (the losers) are sampled from the model before tuning, with its
// own sampler and step count (offline), or re-sampled from the model being tuned every `refresh_every`
// steps (online). Writes an adapter file (applied by `sample`, folded by `fold`) and, at the end, the
// model before and after at each of `eval_steps`: style accuracy (the probe's style head), class accuracy,
// FD-shapes to real images of the target domain, sharpness and its ratio to the model before tuning.
#pragma once
#include <string>
#include <vector>

#include "adapters/tuning.h"
#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"
#include "data/shapes.h"
#include "distill/pso_loss.h"

namespace atelier {

enum class PsoObjective { Pso, Naive };
inline const EnumNames<PsoObjective>& enum_names(PsoObjective) {
  static const EnumNames<PsoObjective> names = {{PsoObjective::Pso, "pso"}, {PsoObjective::Naive, "naive"}};
  return names;
}

struct PsoConfig {
  std::string model = "assets/models/dit_shapes_4step.safetensors";
  std::string images;
  std::vector<std::string> styles{"night"};
  std::int64_t count = 10;
  PsoObjective objective = PsoObjective::Pso;
  PsoLossSettings loss;
  std::int64_t references = 4;
  std::int64_t refresh_every = 0;
  std::int64_t model_steps = 4;
  TuneSettings tune{.method = TuneMethod::LoRA, .lora_rank = 16, .lora_alpha = 16.0};
  TrainSchedule train{.steps = 300, .batch = 4, .warmup = 0, .grad_clip = 1.0, .checkpoint_every = 100};
  double lr = 2e-4;
  double lr_scale = 1.0;
  std::int64_t seed = 0;
  std::int64_t sample_every = 100;
  std::vector<std::int64_t> eval_steps{1, 2, 4};
  std::int64_t eval_per_class = 8;
  std::string probe = "assets/models/probe.safetensors";
  std::int64_t reference_samples = 256;
  std::string output = "adapter.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("model", model, "the few-step model to tune (an Atelier DiT file, e.g. a distill_steps student)", Input::Model);
    v("images", images,
      "target images: a folder with one sub-folder per class of the model (empty: Shapes in `styles`)",
      Input::ImageFolder);
    v("styles", styles, "Shapes target: the model's classes drawn in these rendering styles",
      Choices(shapes::style_names()));
    v("count", count, "Shapes target: number of target images", Range{1, 4096});
    v("objective", objective, "pso (pairwise sample optimization) or naive (plain diffusion loss, the baseline)");
    v("loss", loss.loss, "PSO loss: hinge (with the prior term) or logistic (against the frozen model)");
    v("beta", loss.beta, "PSO: margin sharpness beta", Range{0, 1e4});
    v("loser_weight", loss.loser_weight, "PSO: weight of the reference's error in the margin", Range{0, 100});
    v("prior_weight", loss.prior_weight, "PSO hinge: weight of the prior term on the reference's error", Range{0, 100});
    v("references", references, "PSO: reference images per class sampled from the model", Range{1, 4096});
    v("refresh_every", refresh_every, "PSO: re-sample the references from the tuned model every N steps (0: once)",
      Range{0, 1e9});
    v("model_steps", model_steps, "the model's sampling steps: references and training timesteps", Range{1, 64});
    tune.fields(v);
    train.fields(v);
    v("lr", lr, "AdamW learning rate", Range{0, 1});
    v("lr_scale", lr_scale, "learning-rate factor of DiffFit's tensors", Range{0, 1e4});
    v("seed", seed, "seed of LoRA init, references, noise and timesteps", Range{0, 9e15});
    v("sample_every", sample_every, "steps between preview grids (and adapter snapshots)", Range{1, 1e9});
    v("eval_steps", eval_steps, "step counts the model is evaluated at, before and after", Range{1, 64});
    v("eval_per_class", eval_per_class, "samples per class for the evaluation", Range{1, 4096});
    v("probe", probe, "Shapes probe for metrics (empty: none)", Input::File);
    v("reference_samples", reference_samples, "real target-domain images for FD-shapes", Range{16, 1e6});
    v("output", output, "adapter file written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N; a run resumes on any device");
  }
};

void pso_job(const PsoConfig& config, JobContext& ctx);

}  // namespace atelier
