#include "distill/pso.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/runtime.h"
#include "data/folder_dataset.h"
#include "data/shapes_data.h"
#include "diffusion/generate.h"
#include "diffusion/objective.h"
#include "diffusion/train_base.h"
#include "distill/consistency.h"
#include "eval/class_metrics.h"
#include "eval/metrics.h"
#include "samplers/samplers.h"

namespace atelier {
namespace {

DiT load_model(const PsoConfig& c, DiTModelInfo& info) {
  if (!std::filesystem::exists(c.model)) fail_field("model", c.model, " does not exist");
  return with_field("model", [&] { return load_dit_model(c.model, &info); });
}

// The target images with labels in the model's class space, and (Shapes targets) the target domain.
struct Targets {
  torch::Tensor images, labels;
  std::optional<shapes::Spec> domain;  // Shapes: the model's classes in the target styles
  std::vector<std::int64_t> style_ids;
};

Targets load_targets(const PsoConfig& c, const DiTModelInfo& info) {
  Targets t;
  const int size = static_cast<int>(info.dit.input_size);
  if (!c.images.empty()) {
    const FolderDataset folder = with_field("images", [&] { return FolderDataset::scan(c.images); });
    std::vector<std::size_t> indices(folder.size());
    std::vector<std::int64_t> labels;
    for (std::size_t i = 0; i < folder.size(); ++i) {
      indices[i] = i;
      const auto& name = folder.classes().at(static_cast<std::size_t>(folder.items()[i].label));
      const auto it = std::find(info.class_names.begin(), info.class_names.end(), name);
      if (it == info.class_names.end())
        fail_field("images", c.images, ": sub-folder '", name,
                   "' is not a class of the model (classes: ", json(info.class_names).dump(), ")");
      labels.push_back(it - info.class_names.begin());
    }
    t.images = folder.batch(indices, size).first;
    t.labels = torch::tensor(labels, torch::kLong);
    return t;
  }
  if (!info.data.is_object())
    fail_field("images", "the model was not trained on Shapes; give a folder of target images");
  ShapesData data = from_json<ShapesData>(info.data);
  if (c.styles.empty()) fail_field("styles", "give at least one rendering style (or a folder in 'images')");
  data.styles = c.styles;
  t.domain = data.spec(size);  // names the field ('styles') of a bad style itself
  for (int s : t.domain->styles) t.style_ids.push_back(s);
  const auto batch = shapes::make_batch(*t.domain, 0, 0, c.count);
  t.images = batch.images;
  t.labels = batch.labels;
  return t;
}

// `per_class` samples of every class of the model with its few-step sampler, from a fixed seed.
torch::Tensor sample_classes(DiT& model, const DiTModelInfo& info, std::int64_t per_class, std::int64_t steps,
                             std::uint64_t seed, const CancelToken* cancel) {
  torch::NoGradGuard no_grad;
  std::vector<std::int64_t> labels;
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(info.class_names.size()); ++k)
    labels.insert(labels.end(), per_class, k);
  Rng rng(seed);
  return generate(model, info, torch::tensor(labels).to(model->pos_embed.device()), few_step_sampler(steps), rng,
                  cancel_observer(cancel))
      .clamp(-1, 1);
}

struct Measured {
  double class_accuracy = -1, style_accuracy = -1, fd_shapes = -1, sharpness = 0;
  json to_json() const {
    json j = {{"sharpness", sharpness}};
    if (class_accuracy >= 0) j["class_accuracy"] = class_accuracy;
    if (style_accuracy >= 0) j["style_accuracy"] = style_accuracy;
    if (fd_shapes >= 0) j["fd_shapes"] = fd_shapes;
    return j;
  }
};

class Evaluator {
 public:
  Evaluator(const PsoConfig& c, const DiTModelInfo& info, const Targets& targets)
      : c_(c),
        info_(info),
        styles_(targets.style_ids),
        metrics_(c.probe, info.class_names, c.eval_per_class, targets.domain ? &*targets.domain : nullptr,
                 c.reference_samples) {
    // Real images' sharpness of the model's own domain and of the target: a sample's sharpness relative to
    // the real images of its domain separates blur from a style that is simply sharper or softer.
    const int size = static_cast<int>(info.dit.input_size);
    target_real_ =
        sharpness(targets.domain ? shapes::make_batch(*targets.domain, 2, 0, kRealImages).images : targets.images);
    if (info.data.is_object())
      base_real_ = sharpness(shapes::make_batch(from_json<ShapesData>(info.data).spec(size), 2, 0, kRealImages).images);
  }
  // Sharpness of the student before tuning relative to its real images, of the tuned model relative to the
  // target's real images (0 when the model's own domain is not Shapes).
  double relative_before(double s) const { return base_real_ > 0 ? s / base_real_ : 0.0; }
  double relative_after(double s) const { return base_real_ > 0 && target_real_ > 0 ? s / target_real_ : 0.0; }
  Measured run(DiT& model, std::int64_t steps, const std::string& file, const std::string& title, JobContext& ctx) {
    model->eval();
    auto images = save_class_grid(model, info_, c_.eval_per_class, few_step_sampler(steps),
                                  static_cast<std::uint64_t>(c_.seed) + 5, ctx.path(file), title, &ctx.cancel);
    ctx.report.artifact(file, ctx.path(file));
    Measured m;
    m.sharpness = sharpness(images);
    if (!metrics_.has_probe()) return m;
    m.class_accuracy = metrics_.class_accuracy(images);
    if (!styles_.empty()) {
      torch::NoGradGuard no_grad;
      metrics_.probe()->eval();
      const auto predicted = metrics_.probe()->forward(images).second.argmax(1);
      m.style_accuracy = torch::isin(predicted, torch::tensor(styles_)).to(torch::kDouble).mean().item<double>();
      m.fd_shapes = metrics_.fd_shapes(images);
    }
    return m;
  }

 private:
  const PsoConfig& c_;
  const DiTModelInfo& info_;
  static constexpr std::int64_t kRealImages = 256;
  std::vector<std::int64_t> styles_;
  ClassGridMetrics metrics_;
  double target_real_ = 0, base_real_ = 0;
};

}  // namespace

void pso_job(const PsoConfig& c, JobContext& ctx) {
  // Config -> build: the model and a frozen copy (references, logistic loss, "before"), the targets, the
  // trainable tensors, AdamW, the reference pool (checkpointed, so online refreshes resume exactly).
  const torch::Device device = select_device(c.device);
  DiTModelInfo info;
  DiT model = load_model(c, info);
  DiT frozen = load_model(c, info);
  const std::string base_hash = model_hash(*model);
  const Targets targets = load_targets(c, info);
  model->to(device);
  frozen->to(device);
  frozen->eval();
  for (auto& p : frozen->parameters()) p.set_requires_grad(false);
  Rng init_rng(static_cast<std::uint64_t>(c.seed));
  Tuning tuning = prepare_tuning(model, c.tune, &init_rng);
  TrainedTensors trained(tuning);
  const auto opt = trained.optimizer(c.lr, c.lr_scale);
  const NoiseSchedule schedule = NoiseSchedule::by_name(info.schedule, info.num_train_timesteps);
  const Prediction prediction = prediction_by_name(info.prediction);
  const DiffusionObjective objective(schedule, prediction, model->config().learn_sigma);
  const std::vector<std::int64_t> timesteps = lcm_timesteps(info.num_train_timesteps, c.model_steps);
  const auto references = [&](DiT& from) {
    return sample_classes(from, info, c.references, c.model_steps, static_cast<std::uint64_t>(c.seed) + 7, &ctx.cancel)
        .to(device);
  };
  // copy = true: a frozen tensor the checkpoint holds (online refreshes overwrite it in place).
  TensorSet pool(
      std::vector<std::pair<std::string, torch::Tensor>>{
          {"references", c.objective == PsoObjective::Pso ? references(frozen) : torch::zeros({1})}},
      true);
  ctx.report.info(enum_name(c.objective) + " on " + std::to_string(targets.images.size(0)) + " target images, " +
                  enum_name(c.tune.method) + ": " + std::to_string(tuning.numel()) + " trainable parameters");

  auto write_adapter = [&] {
    save_adapter(ctx.path(c.output), trained.ema_tensors(tuning),
                 {adapter_method(c.tune.method), base_hash, info.class_names, tuning.settings, to_json(c)});
    ctx.report.artifact("adapter", ctx.path(c.output));
  };

  // Loop: PSO pairs each target image with a reference of its class at a timestep of the model's own
  // schedule, one shared noise; naive is the plain diffusion loss on the targets.
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  TrainLoop loop(
      ctx, c.train,
      {{{"train.", trained.live.get()}, {"ema.", trained.ema.get()}, {"pool.", pool.get()}}, opt.get(), &rng});
  loop.clip(trained.live->values);
  loop.ema(*trained.ema, *trained.live, 0.0);  // no averaging: the adapter holds the trained values
  if (c.objective == PsoObjective::Pso && c.refresh_every > 0)
    loop.every(c.refresh_every, [&](std::int64_t) {
      torch::NoGradGuard no_grad;
      pool->values[0].copy_(references(model));
      model->train();
    });
  loop.every(c.sample_every, [&](std::int64_t done) {
    torch::NoGradGuard no_grad;
    model->eval();
    save_class_grid(model, info, 4, few_step_sampler(c.model_steps), static_cast<std::uint64_t>(c.seed) + 3,
                    ctx.path("preview.png"), "step " + std::to_string(done), &ctx.cancel);
    model->train();
    ctx.report.artifact("preview", ctx.path("preview.png"));
    write_adapter();
  });
  const auto on_device = torch::TensorOptions().device(device);
  const auto count = targets.images.size(0);
  model->train();
  loop.run([&](std::int64_t step) {
    std::vector<std::int64_t> rows;
    for (std::int64_t i = 0; i < c.train.batch; ++i) rows.push_back((step * c.train.batch + i) % count);
    const auto index = torch::tensor(rows);
    const shapes::Batch winners{targets.images.index_select(0, index), targets.labels.index_select(0, index), {}};
    if (c.objective == PsoObjective::Naive) {
      const shapes::Batch mine{shard_rows(winners.images, ctx.shard), shard_rows(winners.labels, ctx.shard), {}};
      auto terms = training_terms(model, objective, mine, rng, ctx.shard);
      return TrainStep{terms.loss.mean(), {{"mse", terms.mse.mean()}}};
    }
    auto labels = winners.labels.to(device);
    auto pick = rng.randint(c.references, {c.train.batch}, on_device);
    auto losers = pool->values[0].index_select(0, labels * c.references + pick);
    const PsoPairs pairs = make_pso_pairs(schedule, winners.images.to(device), losers, timesteps, rng, ctx.shard);
    labels = shard_rows(labels, ctx.shard);
    auto yy = torch::cat({labels, labels});
    const auto abar = schedule.abar(pairs.t);
    auto errors = [&](DiT& net) {
      auto f = consistency_function(net->forward(pairs.x_t, pairs.t, yy), pairs.x_t, pairs.t, schedule, prediction);
      return weighted_x0_error(f, pairs.x0, abar).chunk(2);
    };
    auto e = errors(model);
    std::vector<torch::Tensor> r(2);
    if (c.loss.loss == PsoLoss::Logistic) {
      torch::NoGradGuard no_grad;
      r = errors(frozen);
    }
    auto loss = pso_loss(c.loss, e[0], e[1], r[0], r[1]);
    return TrainStep{loss.mean(), {{"winner", e[0].mean()}, {"loser", e[1].mean()}}};
  });

  // Finish: the adapter; the model before (frozen) and after at each step count.
  write_adapter();
  Evaluator evaluator(c, info, targets);
  json m = {{"objective", enum_name(c.objective)}, {"method", enum_name(c.tune.method)}};
  std::map<std::string, double> headline;
  for (const std::int64_t n : c.eval_steps) {
    const std::string key = "steps_" + std::to_string(n);
    const Measured before = evaluator.run(frozen, n, "before_" + std::to_string(n) + ".png",
                                          "before: lcm " + std::to_string(n) + " steps", ctx);
    Measured after;
    {
      torch::NoGradGuard no_grad;
      after = evaluator.run(model, n, "after_" + std::to_string(n) + ".png",
                            "after " + enum_name(c.objective) + ": lcm " + std::to_string(n) + " steps", ctx);
    }
    m[key] = {{"before", before.to_json()}, {"after", after.to_json()}};
    const double ratio = before.sharpness > 0 ? after.sharpness / before.sharpness : 0.0;
    m[key]["sharpness_ratio"] = ratio;
    headline[key + "/sharpness_ratio"] = ratio;
    const double rel_before = evaluator.relative_before(before.sharpness);
    const double rel_after = evaluator.relative_after(after.sharpness);
    if (rel_before > 0 && rel_after > 0) {
      m[key]["before"]["relative_sharpness"] = rel_before;
      m[key]["after"]["relative_sharpness"] = rel_after;
      m[key]["relative_sharpness_ratio"] = rel_after / rel_before;
      headline[key + "/relative_sharpness_ratio"] = rel_after / rel_before;
    }
    for (const auto& [name, value] : m[key]["after"].items()) headline[key + "/" + name] = value.get<double>();
  }
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  ctx.report.metrics(headline);
}

}  // namespace atelier
