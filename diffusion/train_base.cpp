#include "diffusion/train_base.h"

#include "core/distributed.h"
#include "core/report.h"
#include "core/rng.h"
#include "core/runtime.h"
#include "data/training_images.h"
#include "diffusion/generate.h"

namespace atelier {
namespace {

DiTConfig build_config(const TrainBaseConfig& c, std::int64_t num_classes) {
  DiTConfig d = dit_preset(c.model);
  if (c.hidden_size > 0) d.hidden_size = c.hidden_size;
  if (c.depth > 0) d.depth = c.depth;
  if (c.num_heads > 0) d.num_heads = c.num_heads;
  d.input_size = c.image_size;
  d.in_channels = 3;
  d.num_classes = num_classes;
  d.learn_sigma = c.learn_sigma;
  d.final_conv = c.final_conv;
  d.class_dropout_prob = c.class_dropout;
  return d;
}

// Validation loss of the EMA model on a fixed set, timesteps and noise drawn once: 256 images of
// Shapes' validation split, or up to 256 of the folder's images (a folder has no held-out split).
class Validation {
 public:
  Validation(const TrainingImages& data, const DiffusionObjective& objective, std::uint64_t seed, torch::Device device)
      : objective_(objective) {
    Rng rng(seed);
    const auto on_device = torch::TensorOptions().device(device);
    const auto val = data.is_folder() ? data.folder_subset(kCount) : shapes::make_batch(*data.spec(), 1, 0, kCount);
    images_ = val.images.to(device);
    labels_ = val.labels.to(device);
    count_ = images_.size(0);
    t_ = rng.randint(objective.num_timesteps(), {count_}, on_device);
    noise_ = rng.randn(images_.sizes(), on_device);
  }
  double loss(DiT& model) const {
    torch::NoGradGuard no_grad;
    model->eval();
    double total = 0;
    for (std::int64_t i = 0; i < count_; i += 64) {
      auto x0 = images_.slice(0, i, i + 64), t = t_.slice(0, i, i + 64), n = noise_.slice(0, i, i + 64);
      auto out = model->forward(objective_.q_sample(x0, t, n), t, labels_.slice(0, i, i + 64));
      total += objective_.losses(out, x0, t, n).mse.sum().item<double>();
    }
    return total / static_cast<double>(count_);
  }

 private:
  static constexpr std::int64_t kCount = 256;
  std::int64_t count_ = 0;
  const DiffusionObjective& objective_;
  torch::Tensor images_, labels_, t_, noise_;
};

}  // namespace

DiffusionObjective::Terms shapes_training_terms(DiT& model, const DiffusionObjective& objective,
                                                const shapes::Spec& spec, std::int64_t first, std::int64_t batch,
                                                Rng& rng) {
  return training_terms(model, objective, shapes::make_batch(spec, 0, first, batch), rng);
}

DiffusionObjective::Terms training_terms(DiT& model, const DiffusionObjective& objective, const shapes::Batch& data,
                                         Rng& rng, const Shard& shard) {
  const auto device = model->pos_embed.device();
  const auto on_device = torch::TensorOptions().device(device);
  const auto batch = data.images.size(0) * shard.world;  // the global batch the random numbers are drawn for
  auto x0 = data.images.to(device);
  auto noise_shape = data.images.sizes().vec();
  noise_shape[0] = batch;
  auto t = shard_rows(rng.randint(objective.num_timesteps(), {batch}, on_device), shard);
  auto noise = shard_rows(rng.randn(noise_shape, on_device), shard);
  auto y = model->drop_labels(data.labels.to(device), shard_rows(rng.rand({batch}, on_device), shard));
  auto out = model->forward(objective.q_sample(x0, t, noise), t, y);
  return objective.losses(out, x0, t, noise);
}

void train_base(const TrainBaseConfig& c, JobContext& ctx) {
  // Config -> build: the model, its EMA, AdamW on the trainable parameters, the objective.
  const TrainingImages data = c.images.empty()
                                  ? TrainingImages::from_shapes(c.data.spec(static_cast<int>(c.image_size)))
                                  : with_field("images", [&] {
                                      return TrainingImages::from_folder(c.images, static_cast<int>(c.image_size),
                                                                         static_cast<std::uint64_t>(c.seed) + 4);
                                    });
  const auto classes = static_cast<std::int64_t>(data.classes().size());
  const DiTConfig dc = build_config(c, classes);
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  const torch::Device device = select_device(c.device);
  DiT model(dc);
  DiT ema(dc);
  load_module_tensors(*ema, module_tensors(*model), "", "ema");
  model->to(device);
  ema->to(device);
  for (auto& p : ema->parameters()) p.set_requires_grad(false);
  std::vector<torch::Tensor> params;
  for (auto& p : model->parameters())
    if (p.requires_grad()) params.push_back(p);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  DiffusionObjective objective(NoiseSchedule::by_name(c.schedule, 1000), prediction_by_name(c.prediction),
                               c.learn_sigma);
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  std::int64_t params_count = 0;
  for (auto& p : params) params_count += p.numel();
  ctx.report.info(c.model + ": " + std::to_string(params_count) + " trainable parameters, " +
                  std::to_string(dc.num_patches()) + " tokens, " + std::to_string(classes) + " classes" +
                  (data.is_folder() ? " (" + std::to_string(data.images().size(0)) + " images in " +
                                          printable(data.folder(), false) + "; the Shapes fields are ignored)"
                                    : ""));

  // The EMA weights as a model file (also written at every preview, so `sample` can judge a run midway).
  const DiTModelInfo info{dc,
                          c.schedule,
                          c.prediction,
                          objective.num_timesteps(),
                          data.classes(),
                          data.is_folder() ? json(c.images) : to_json(c.data)};
  auto write_model = [&] {
    save_dit_model(ctx.path(c.output), ema, info, to_json(c));
    ctx.report.artifact("model", ctx.path(c.output));
  };
  const Validation val(data, objective, static_cast<std::uint64_t>(c.seed) + 2, device);

  // Loop: validation loss and a preview grid (4 EMA samples per class, fixed noise) on their cadence.
  TrainLoop loop(ctx, c.train, {{{"model.", model.get()}, {"ema.", ema.get()}}, &opt, &rng});
  loop.clip(params);
  loop.ema(*ema, *model, c.ema_decay);
  loop.every(
      c.val_every,
      [&](std::int64_t done) {
        ctx.report.progress("val", done, c.train.steps, {{"val_loss", val.loss(ema)}});
      },
      true);
  loop.every(
      c.preview.sample_every,
      [&](std::int64_t done) {
        save_class_grid(ema, info, 4, c.preview.sample_steps, c.preview.cfg_scale,
                        static_cast<std::uint64_t>(c.seed) + 3, ctx.path("preview.png"), "step " + std::to_string(done),
                        &ctx.cancel);
        ctx.report.artifact("preview", ctx.path("preview.png"));
        if (done < c.train.steps) write_model();
      },
      true);
  model->train();
  loop.run([&](std::int64_t step) {
    const std::int64_t b = c.train.batch;  // this rank's rows of the global batch (all of it in one process)
    auto terms =
        training_terms(model, objective, data.batch(step * b + ctx.shard.first(b), ctx.shard.size(b)), rng, ctx.shard);
    return TrainStep{terms.loss.mean(), {{"mse", terms.mse.mean()}}};
  });

  write_model();
}

}  // namespace atelier
