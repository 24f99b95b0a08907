#include "diffusion/train_base.h"

#include <cmath>

#include "core/atomic_file.h"
#include "core/image.h"
#include "core/rng.h"
#include "core/runtime.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "diffusion/generate.h"

namespace atelier {
namespace {

std::vector<int> indices_of(const std::vector<std::string>& names, const std::vector<std::string>& all,
                            const char* what) {
  std::vector<int> out;
  for (const auto& n : names) out.push_back(shapes::index_of(all, n, what));
  return out;
}

DiTConfig build_config(const TrainBaseConfig& c, const shapes::Spec& spec) {
  DiTConfig d = dit_preset(c.model);
  if (c.hidden_size > 0) d.hidden_size = c.hidden_size;
  if (c.depth > 0) d.depth = c.depth;
  if (c.num_heads > 0) d.num_heads = c.num_heads;
  d.input_size = c.image_size;
  d.in_channels = 3;
  d.num_classes = spec.num_labels();
  d.learn_sigma = c.learn_sigma;
  d.class_dropout_prob = c.class_dropout;
  return d;
}

}  // namespace

std::vector<std::string> shapes_class_names(const shapes::Spec& spec) {
  std::vector<std::string> out;
  for (int i = 0; i < spec.num_labels(); ++i) out.push_back(spec.label_name(i));
  return out;
}

DiffusionObjective::Terms shapes_training_terms(DiT& model, const DiffusionObjective& objective,
                                                const shapes::Spec& spec, std::int64_t first, std::int64_t batch,
                                                Rng& rng) {
  return training_terms(model, objective, shapes::make_batch(spec, 0, first, batch), rng);
}

DiffusionObjective::Terms training_terms(DiT& model, const DiffusionObjective& objective, const shapes::Batch& data,
                                         Rng& rng) {
  const auto device = model->pos_embed.device();
  const auto on_device = torch::TensorOptions().device(device);
  const auto batch = data.images.size(0);
  auto x0 = data.images.to(device);
  auto t = rng.randint(objective.num_timesteps(), {batch}, on_device);
  auto noise = rng.randn(data.images.sizes(), on_device);
  auto y = model->drop_labels(data.labels.to(device), rng.rand({batch}, on_device));
  auto out = model->forward(objective.q_sample(x0, t, noise), t, y);
  return objective.losses(out, x0, t, noise);
}

torch::Tensor save_class_grid(DiT& model, const DiTModelInfo& info, std::int64_t per_class, std::int64_t steps,
                              double cfg_scale, std::uint64_t seed, const std::filesystem::path& path,
                              const std::string& title) {
  SamplerSettings s;
  s.steps = steps;
  s.cfg_scale = cfg_scale;
  std::vector<std::int64_t> labels;
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(info.class_names.size()); ++k)
    labels.insert(labels.end(), per_class, k);
  Rng rng(seed);
  auto images = generate(model, info, torch::tensor(labels).to(model->pos_embed.device()), s, rng).clamp(-1, 1).cpu();
  GridOptions grid;
  grid.columns = static_cast<int>(per_class);
  grid.row_labels = info.class_names;
  grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
  grid.title = title;
  save_png(path, make_grid(images, grid), {{"atelier.title", title}});
  return images;
}

shapes::Spec ShapesData::spec(int size) const {
  shapes::Spec s;
  s.size = size;
  s.shapes = indices_of(classes, shapes::shape_names(), "field 'classes'");
  s.glyphs = indices_of(glyphs, shapes::glyph_names(), "field 'glyphs'");
  s.styles = indices_of(styles, shapes::style_names(), "field 'styles'");
  if (s.styles.empty()) s.styles = {0};
  if (min_scale > max_scale) fail("field 'min_scale' (", min_scale, ") is larger than 'max_scale' (", max_scale, ")");
  s.min_scale = static_cast<float>(min_scale);
  s.max_scale = static_cast<float>(max_scale);
  s.jitter = static_cast<float>(jitter);
  s.rotation = static_cast<float>(rotation);
  s.plain_backgrounds = plain_backgrounds;
  s.seed = static_cast<std::uint64_t>(seed);
  return s;
}

void save_dit_model(const std::filesystem::path& path, DiT& model, const DiTModelInfo& info, const json& config) {
  Metadata meta = {{"atelier.kind", "dit"},
                   {"dit.config", to_json(info.dit).dump()},
                   {"diffusion.schedule", info.schedule},
                   {"diffusion.prediction", info.prediction},
                   {"diffusion.num_train_timesteps", std::to_string(info.num_train_timesteps)},
                   {"classes", json(info.class_names).dump()},
                   {"data", info.data.dump()},
                   {"atelier.config", config.dump()}};
  safetensors::save(path, module_tensors(*model), meta);
}

DiT load_dit_model(const std::filesystem::path& path, DiTModelInfo* info) {
  TensorFile f = safetensors::load(path);
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(path.string(), ": not an Atelier DiT model (metadata '", key, "' missing)");
    return it->second;
  };
  DiTModelInfo i;
  i.dit =
      with_context([&] { return from_json<DiTConfig>(json::parse(get("dit.config"))); }, path.string(), ": dit.config");
  i.schedule = get("diffusion.schedule");
  i.prediction = get("diffusion.prediction");
  i.num_train_timesteps = std::stoll(get("diffusion.num_train_timesteps"));
  i.class_names = json::parse(get("classes")).get<std::vector<std::string>>();
  i.data = json::parse(get("data"), nullptr, false);
  DiT model(i.dit);
  load_module_tensors(*model, f.tensors, "", path.string());
  model->eval();
  if (info != nullptr) *info = std::move(i);
  return model;
}

void train_base(const TrainBaseConfig& c, JobContext& ctx) {
  const shapes::Spec spec = c.data.spec(static_cast<int>(c.image_size));
  const DiTConfig dc = build_config(c, spec);
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  const torch::Device device = select_device(c.device);
  DiT model(dc);
  DiT ema(dc);
  load_module_tensors(*ema, module_tensors(*model), "", "ema");
  model->to(device);
  ema->to(device);
  const auto on_device = torch::TensorOptions().device(device);
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
                  std::to_string(dc.num_patches()) + " tokens, " + std::to_string(spec.num_labels()) + " classes");

  const TrainingParts parts{{{"model.", model.get()}, {"ema.", ema.get()}}, &opt, &rng};
  const std::int64_t start = ctx.resume ? restore_training_parts(ctx.run_dir, parts) : 0;
  if (start > 0) ctx.report.info("resumed from step " + std::to_string(start));
  auto checkpoint = [&](std::int64_t step) {
    ctx.report.artifact("checkpoint", save_training_parts(ctx.run_dir, step, parts));
  };

  // Fixed validation set: images, timesteps and noise drawn once from their own generator.
  Rng val_rng(static_cast<std::uint64_t>(c.seed) + 2);
  const auto val = shapes::make_batch(spec, 1, 0, 256);
  const auto val_images = val.images.to(device), val_labels = val.labels.to(device);
  const auto val_t = val_rng.randint(objective.num_timesteps(), {256}, on_device);
  const auto val_noise = val_rng.randn(val.images.sizes(), on_device);
  auto validate = [&](std::int64_t step) {
    torch::NoGradGuard no_grad;
    ema->eval();
    double total = 0;
    for (std::int64_t i = 0; i < 256; i += 64) {
      auto x0 = val_images.slice(0, i, i + 64), t = val_t.slice(0, i, i + 64), n = val_noise.slice(0, i, i + 64);
      auto out = ema->forward(objective.q_sample(x0, t, n), t, val_labels.slice(0, i, i + 64));
      total += objective.losses(out, x0, t, n).mse.sum().item<double>();
    }
    ctx.report.progress("val", step, c.steps, {{"val_loss", total / 256}});
  };

  // The EMA weights as a model file (also written at every preview, so `sample` can judge a run midway).
  const DiTModelInfo info{
      dc, c.schedule, c.prediction, objective.num_timesteps(), shapes_class_names(spec), to_json(c.data)};
  auto write_model = [&] {
    save_dit_model(ctx.path(c.output), ema, info, to_json(c));
    ctx.report.artifact("model", ctx.path(c.output));
  };

  // Preview: 4 EMA samples per class with fixed noise, as a labelled grid.
  auto preview = [&](std::int64_t step) {
    save_class_grid(ema, info, 4, c.sample_steps, c.cfg_scale, static_cast<std::uint64_t>(c.seed) + 3,
                    ctx.path("preview.png"), "step " + std::to_string(step));
    ctx.report.artifact("preview", ctx.path("preview.png"));
    if (step < c.steps) write_model();
  };

  model->train();
  for (std::int64_t step = start; step < c.steps; ++step) {
    if (ctx.cancel.requested()) {
      checkpoint(step);
      throw Cancelled();
    }
    const double lr = c.warmup > 0 && step < c.warmup ? c.lr * (step + 1) / c.warmup : c.lr;
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    auto terms = shapes_training_terms(model, objective, spec, step * c.batch, c.batch, rng);
    auto loss = terms.loss.mean();
    opt.zero_grad();
    loss.backward();
    if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params, c.grad_clip);
    opt.step();
    ema_update(*ema, *model, step < c.warmup ? 0.0 : c.ema_decay);
    ctx.report.progress("train", step + 1, c.steps,
                        {{"loss", loss.item<double>()}, {"mse", terms.mse.mean().item<double>()}, {"lr", lr}});
    const std::int64_t done = step + 1;
    if (done % c.checkpoint_every == 0 && done < c.steps) checkpoint(done);
    if (done % c.val_every == 0 || done == c.steps) validate(done);
    if (done % c.sample_every == 0 || done == c.steps) preview(done);
  }

  write_model();
}

}  // namespace atelier
