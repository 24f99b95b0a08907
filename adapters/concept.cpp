#include "adapters/concept.h"

#include <chrono>
#include <filesystem>

#include "adapters/finetune.h"
#include "adapters/ortho.h"
#include "core/atomic_file.h"
#include "core/folder_dataset.h"
#include "core/metrics.h"
#include "core/probe.h"
#include "core/runtime.h"
#include "core/training_state.h"
#include "diffusion/generate.h"
#include "diffusion/objective.h"

namespace atelier {
namespace {

std::string concept_name(const ConceptConfig& c) {
  if (!c.token.empty()) return c.token;
  if (c.images.empty()) return c.glyph;
  return std::filesystem::path(c.images).lexically_normal().filename().string();
}

// Real images of a concept (its references for the identity metric, and its training data).
class ConceptImages {
 public:
  ConceptImages(const json& settings, int size) : size_(size) {
    if (settings.value("images", std::string()).empty()) {
      ShapesData d;
      d.classes.clear();
      d.glyphs = {settings.at("glyph").get<std::string>()};
      d.styles = settings.value("styles", std::vector<std::string>{"flat"});
      spec_ = d.spec(size);
      glyph_ = d.glyphs[0];
    } else {
      folder_ = FolderDataset::scan(settings.at("images").get<std::string>());
    }
  }
  torch::Tensor batch(std::int64_t first, std::int64_t n, Rng* rng, int split = 0) const {
    if (!folder_) return shapes::make_batch(spec_, split, first, n).images;
    std::vector<std::size_t> idx;
    for (std::int64_t i = 0; i < n; ++i) idx.push_back(static_cast<std::size_t>(first + i) % folder_->size());
    return folder_->batch(idx, size_, rng).first;
  }
  torch::Tensor references(std::int64_t n) const {
    return batch(0, folder_ ? std::min<std::int64_t>(n, folder_->size()) : n, nullptr, 2);
  }
  // Probe label of a Shapes glyph concept; -1 for image folders.
  std::int64_t probe_label() const { return glyph_.empty() ? -1 : probe_label_of(glyph_); }

 private:
  int size_;
  shapes::Spec spec_;
  std::string glyph_;
  std::optional<FolderDataset> folder_;
};

// Samples of `label` and how well they show the concept: probe-feature cosine to its real images, and
// the probe's glyph accuracy (Shapes glyph concepts).
json concept_identity(DiT& model, const DiTModelInfo& info, std::int64_t label, const json& settings, std::int64_t n,
                      std::int64_t steps, double cfg, std::uint64_t seed, ProbeNet* probe) {
  SamplerSettings s;
  s.steps = steps;
  s.cfg_scale = cfg;
  Rng rng(seed);
  auto images = generate(model, info, torch::full({n}, label, torch::kLong).to(model->pos_embed.device()), s, rng)
                    .clamp(-1, 1)
                    .cpu();
  json out = {{"concept", settings.value("concept", std::string())}};
  if (probe == nullptr) return out;
  const ConceptImages real(settings, static_cast<int>(images.size(-1)));
  out["feature_cosine"] = feature_cosine(*probe, images, real.references(64));
  if (real.probe_label() >= 0)
    out["probe_accuracy"] = probe_accuracy(*probe, images, torch::full({n}, real.probe_label(), torch::kLong));
  return out;
}

void concept_job(const ConceptConfig& c, JobContext& ctx, bool ortho) {
  const torch::Device device = select_device(c.device);
  if (!std::filesystem::exists(c.base)) fail("field 'base': ", c.base, " does not exist");
  DiTModelInfo info;
  DiT model = with_context([&] { return load_dit_model(c.base, &info); }, "field 'base'");
  const std::string base_hash = model_hash(*model);
  const std::string name = concept_name(c);
  if (std::find(info.class_names.begin(), info.class_names.end(), name) != info.class_names.end())
    fail("field 'concept': the base model already has a class '", name, "'; choose another token name");
  const auto size = model->config().input_size;
  json settings = {{"input_size", size}, {"concept", name},     {"images", c.images},    {"glyph", c.glyph},
                   {"styles", c.styles}, {"lora_rank", c.rank}, {"lora_alpha", c.alpha}, {"lora_targets", c.targets}};
  const ConceptImages data(settings, static_cast<int>(size));

  // The concept's token: a new label row before the null row, N(0, 0.02) as DiT initialises labels.
  const std::int64_t label = model->config().num_classes;
  Rng init_rng(static_cast<std::uint64_t>(c.seed));
  {
    const auto& old = model->y_table->weight;
    auto row = init_rng.randn({1, old.size(1)}) * 0.02;
    model->set_label_table(
        torch::cat({old.narrow(0, 0, label).detach(), row, old.narrow(0, label, old.size(0) - label).detach()}));
  }
  info.class_names.push_back(name);
  info.dit = model->config();
  model->to(device);
  for (auto& p : model->parameters()) p.set_requires_grad(false);

  std::optional<LoRA> lora;
  if (ortho) {
    const OrthoAllocation a{static_cast<std::uint64_t>(c.ortho_seed), c.ortho_slot * c.rank, c.rank};
    lora = create_ortho_lora(*model, c.targets, a, c.alpha);
    settings["ortho"] = {{"seed", a.seed}, {"first", a.first}, {"rank", a.rank}};
  } else {
    lora = LoRA::create(*model, c.targets, {c.rank, c.alpha, 0.0});
  }
  lora->attach(model->hooks(), *model);
  auto table = model->y_table->weight;
  table.set_requires_grad(true);
  auto mask = torch::zeros({table.size(0), 1}, table.options().requires_grad(false));
  mask[label] = 1;
  table.register_hook([mask](const torch::Tensor& g) { return g * mask; });

  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> lora_params;
  for (std::size_t i = 0; i < lora->paths().size(); ++i) {
    const auto& l = lora->layers()[i];
    if (l->down.requires_grad()) {
      named.emplace_back(lora->paths()[i] + ".lora_A.weight", l->down);
      lora_params.push_back(l->down);
    }
    named.emplace_back(lora->paths()[i] + ".lora_B.weight", l->up);
    lora_params.push_back(l->up);
  }
  named.emplace_back("y_embedder.embedding_table.weight", table);
  TensorSet train_set(named, false);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(lora_params,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(c.lr).weight_decay(0)));
  groups.emplace_back(std::vector<torch::Tensor>{table}, std::make_unique<torch::optim::AdamWOptions>(
                                                             torch::optim::AdamWOptions(c.token_lr).weight_decay(0)));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(c.lr).weight_decay(0));
  std::int64_t trainable = 0;
  for (const auto& p : lora_params) trainable += p.numel();
  ctx.report.info(std::string(ortho ? "ortho_lora" : "lora") + " concept '" + name + "': " + std::to_string(trainable) +
                  " LoRA parameters on " + std::to_string(lora->paths().size()) + " layers + a " +
                  std::to_string(table.size(1)) + "-wide token");

  DiffusionObjective objective(NoiseSchedule::by_name(info.schedule, info.num_train_timesteps),
                               prediction_by_name(info.prediction), model->config().learn_sigma);
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  const TrainingParts parts{{{"train.", train_set.get()}}, &opt, &rng};
  const std::int64_t start = ctx.resume ? restore_training_parts(ctx.run_dir, parts) : 0;
  if (start > 0) ctx.report.info("resumed from step " + std::to_string(start));

  auto write_adapter = [&] {
    TensorMap tensors = lora->tensors();
    tensors["concept.embedding"] = table[label].detach();
    AdapterInfo a{ortho ? "ortho_lora" : "lora", base_hash, {name}, settings, to_json(c)};
    save_adapter(ctx.path(c.output), tensors, a);
    ctx.report.artifact("adapter", ctx.path(c.output));
  };
  auto preview = [&](const std::string& file, const std::string& title) {
    torch::NoGradGuard no_grad;
    model->eval();
    DiTModelInfo only = info;
    save_class_grid(model, only, 4, c.sample_steps, c.cfg_scale, static_cast<std::uint64_t>(c.seed) + 3, ctx.path(file),
                    title);
    ctx.report.artifact(file, ctx.path(file));
    model->train();
  };

  model->train();
  const auto on_device = torch::TensorOptions().device(device);
  for (std::int64_t step = start; step < c.steps; ++step) {
    if (ctx.cancel.requested()) {
      ctx.report.artifact("checkpoint", save_training_parts(ctx.run_dir, step, parts));
      throw Cancelled();
    }
    auto x0 = data.batch(step * c.batch, c.batch, &rng).to(device);
    auto t = rng.randint(objective.num_timesteps(), {c.batch}, on_device);
    auto noise = rng.randn(x0.sizes(), on_device);
    auto y = model->drop_labels(torch::full({c.batch}, label, on_device.dtype(torch::kLong)),
                                rng.rand({c.batch}, on_device));
    auto terms = objective.losses(model->forward(objective.q_sample(x0, t, noise), t, y), x0, t, noise);
    auto loss = terms.loss.mean();
    opt.zero_grad();
    loss.backward();
    if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(train_set->values, c.grad_clip);
    opt.step();
    ctx.report.progress("train", step + 1, c.steps, {{"loss", loss.item<double>()}});
    const std::int64_t done = step + 1;
    if (done % c.checkpoint_every == 0 && done < c.steps)
      ctx.report.artifact("checkpoint", save_training_parts(ctx.run_dir, done, parts));
    if (done % c.sample_every == 0 && done < c.steps) {
      preview("preview.png", "step " + std::to_string(done));
      write_adapter();
    }
  }
  write_adapter();
  preview("samples.png", name + ": " + std::to_string(c.steps) + " steps");
  if (c.probe.empty()) return;
  ProbeNet probe = load_probe(c.probe);
  torch::NoGradGuard no_grad;
  model->eval();
  json identity = concept_identity(model, info, label, settings, c.eval_samples, c.sample_steps, c.cfg_scale,
                                   static_cast<std::uint64_t>(c.seed) + 5, &probe);
  write_file_atomic(ctx.path("metrics.json"), identity.dump(2) + "\n");
  std::map<std::string, double> flat;
  for (auto it = identity.begin(); it != identity.end(); ++it)
    if (it->is_number()) flat[it.key()] = it->get<double>();
  ctx.report.metrics(flat);
}

}  // namespace

void lora_concept_job(const ConceptConfig& c, JobContext& ctx) {
  concept_job(c, ctx, false);
}

void ortho_concept_job(const ConceptConfig& c, JobContext& ctx) {
  concept_job(c, ctx, true);
}

void merge_job(const MergeConfig& c, JobContext& ctx) {
  if (c.adapters.empty()) fail("field 'adapters': give at least one concept adapter");
  const torch::Device device = select_device(c.device);
  std::vector<double> weights = c.weights;
  if (weights.empty()) weights.assign(c.adapters.size(), 0.6);
  std::vector<AdapterFile> files;
  std::size_t concept_count = 0;  // each concept adapter appends one class to the base's
  for (const auto& path : c.adapters) {
    files.push_back(with_context([&] { return load_adapter(path); }, "field 'adapters'"));
    concept_count += files.back().tensors.count("concept.embedding");
  }
  const auto t0 = std::chrono::steady_clock::now();
  DiTModelInfo info;
  std::vector<std::pair<LoRA, double>> loras;
  DiT model = load_adapted_model(c.base, c.adapters, weights, &info, &loras, c.block_weights);
  DiT merged(model->config());
  load_module_tensors(*merged, folded_tensors(model, loras), "", "merged model");
  const double merge_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<std::string> base_classes(info.class_names.begin(),
                                              info.class_names.end() - static_cast<std::ptrdiff_t>(concept_count));
  save_dit_model(ctx.path(c.output), merged, info, to_json(c));
  ctx.report.artifact("model", ctx.path(c.output));
  ctx.report.info("merged " + std::to_string(c.adapters.size()) + " adapter(s) in " + std::to_string(merge_s) + " s");

  merged->to(device);
  // Preview: one row per concept.
  DiTModelInfo concepts = info;
  concepts.class_names.assign(info.class_names.begin() + static_cast<std::ptrdiff_t>(base_classes.size()),
                              info.class_names.end());
  std::vector<std::int64_t> labels;
  for (std::size_t k = 0; k < concepts.class_names.size(); ++k)
    labels.insert(labels.end(), c.per_concept, static_cast<std::int64_t>(base_classes.size() + k));
  SamplerSettings s;
  s.steps = c.sample_steps;
  s.cfg_scale = c.cfg_scale;
  Rng rng(static_cast<std::uint64_t>(c.seed));
  auto images = generate(merged, info, torch::tensor(labels).to(device), s, rng).clamp(-1, 1).cpu();
  GridOptions grid;
  grid.columns = static_cast<int>(c.per_concept);
  grid.row_labels = concepts.class_names;
  grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
  grid.title = "merged: " + std::to_string(c.adapters.size()) + " concepts";
  save_png(ctx.path("preview.png"), make_grid(images, grid), {{"atelier.config", to_json(c).dump()}});
  ctx.report.artifact("preview", ctx.path("preview.png"));

  json metrics = {{"merge_seconds", merge_s}, {"concepts", json::array()}};
  if (!c.probe.empty()) {
    ProbeNet probe = load_probe(c.probe);
    for (std::size_t k = 0; k < c.adapters.size(); ++k) {
      json id =
          concept_identity(merged, info, static_cast<std::int64_t>(base_classes.size() + k), files[k].info.settings,
                           c.eval_samples, c.sample_steps, c.cfg_scale, static_cast<std::uint64_t>(c.seed) + 5, &probe);
      id["adapter"] = c.adapters[k];
      metrics["concepts"].push_back(id);
    }
  }
  write_file_atomic(ctx.path("metrics.json"), metrics.dump(2) + "\n");
  ctx.report.metrics({{"merge_seconds", merge_s}});
}

}  // namespace atelier
