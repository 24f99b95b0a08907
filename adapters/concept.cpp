#include "adapters/concept.h"

#include <chrono>
#include <filesystem>

#include "adapters/finetune.h"
#include "adapters/ortho.h"
#include "adapters/sd_tuning.h"
#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/runtime.h"
#include "core/training_state.h"
#include "data/folder_dataset.h"
#include "diffusion/generate.h"
#include "diffusion/objective.h"
#include "diffusion/stable_diffusion.h"
#include "eval/metrics.h"
#include "eval/probe.h"

namespace atelier {
namespace {

std::string concept_name(const ConceptConfig& c) {
  if (!c.token.empty()) return c.token;
  if (c.images.empty()) return c.glyph;
  // A folder name is bytes; the token name goes into JSON metadata, so what is not UTF-8 is escaped.
  return printable(std::filesystem::path(c.images).lexically_normal().filename().string(), false);
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
                      std::int64_t steps, double cfg, std::uint64_t seed, ProbeNet* probe, const CancelToken* cancel) {
  SamplerSettings s;
  s.steps = steps;
  s.cfg_scale = cfg;
  Rng rng(seed);
  const auto labels = torch::full({n}, label, torch::kLong).to(model->pos_embed.device());
  auto images = checked_finite(generate(model, info, labels, s, rng, cancel_observer(cancel)), "identity samples")
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

// The concept's trainable tensors: LoRA factors (ortho_lora: the up-projections only) and the token's
// label row, whose gradient is masked to that row.
struct ConceptTensors {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> lora_params;
  torch::Tensor table;

  ConceptTensors(DiT& model, LoRA& lora, std::int64_t label) : table(model->y_table->weight) {
    table.set_requires_grad(true);
    auto mask = torch::zeros({table.size(0), 1}, table.options().requires_grad(false));
    mask[label] = 1;
    table.register_hook([mask](const torch::Tensor& g) { return g * mask; });
    for (std::size_t i = 0; i < lora.paths().size(); ++i) {
      const auto& l = lora.layers()[i];
      if (l->down.requires_grad()) {
        named.emplace_back(lora.paths()[i] + ".lora_A.weight", l->down);
        lora_params.push_back(l->down);
      }
      named.emplace_back(lora.paths()[i] + ".lora_B.weight", l->up);
      lora_params.push_back(l->up);
    }
    named.emplace_back("y_embedder.embedding_table.weight", table);
  }
  // AdamW: lr for the LoRA factors, token_lr for the token.
  std::unique_ptr<torch::optim::AdamW> optimizer(double lr, double token_lr) const {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    auto options = [](double rate) {
      return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(rate).weight_decay(0));
    };
    groups.emplace_back(lora_params, options(lr));
    groups.emplace_back(std::vector<torch::Tensor>{table}, options(token_lr));
    return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(lr).weight_decay(0));
  }
  std::int64_t lora_numel() const {
    std::int64_t n = 0;
    for (const auto& p : lora_params) n += p.numel();
    return n;
  }
};

// The concept's LoRA on the target layers: ortho_lora's down-projections are the concept's columns of the
// shared orthogonal basis (recorded in `settings`), plain LoRA's are drawn from the job's generator.
LoRA concept_lora(DiT& model, const ConceptConfig& c, bool ortho, Rng& init_rng, json& settings) {
  if (!ortho) return LoRA::create(*model, c.targets, {c.rank, c.alpha, 0.0}, &init_rng);
  const OrthoAllocation a{static_cast<std::uint64_t>(c.ortho_seed), c.ortho_slot * c.rank, c.rank};
  settings["ortho"] = {{"seed", a.seed}, {"first", a.first}, {"rank", a.rank}};
  return create_ortho_lora(*model, c.targets, a, c.alpha);
}

// metrics.json of a concept run: identity of the concept's samples (probe-feature cosine to its real
// images, and glyph accuracy for Shapes glyphs).
void write_identity_metrics(DiT& model, const DiTModelInfo& info, std::int64_t label, const json& settings,
                            const ConceptConfig& c, JobContext& ctx) {
  ProbeNet probe = load_probe(c.probe);
  torch::NoGradGuard no_grad;
  model->eval();
  json identity = concept_identity(model, info, label, settings, c.eval_samples, c.preview.sample_steps,
                                   c.preview.cfg_scale, static_cast<std::uint64_t>(c.seed) + 5, &probe, &ctx.cancel);
  write_file_atomic(ctx.path("metrics.json"), json_text(identity, 2) + "\n");
  std::map<std::string, double> flat;
  for (auto it = identity.begin(); it != identity.end(); ++it)
    if (it->is_number()) flat[it.key()] = it->get<double>();
  ctx.report.metrics(flat);
}

void concept_job(const ConceptConfig& c, JobContext& ctx, AdapterMethod method) {
  // Config -> build: the base with the concept's token and LoRA attached.
  const bool ortho = method == AdapterMethod::OrthoLoRA;
  const torch::Device device = select_device(c.device);
  if (!std::filesystem::exists(c.base)) fail_field("base", c.base, " does not exist");
  if (is_stable_diffusion(c.base)) return sd_lora_job(c, ctx, ortho);
  DiTModelInfo info;
  DiT model = with_field("base", [&] { return load_dit_model(c.base, &info); });
  const std::string base_hash = model_hash(*model);
  const std::string name = concept_name(c);
  if (std::find(info.class_names.begin(), info.class_names.end(), name) != info.class_names.end())
    fail_field("concept", "the base model already has a class '", name, "'; choose another token name");
  const auto size = model->config().input_size;
  json settings = {{"input_size", size}, {"concept", name},     {"images", c.images},    {"glyph", c.glyph},
                   {"styles", c.styles}, {"lora_rank", c.rank}, {"lora_alpha", c.alpha}, {"lora_targets", c.targets}};
  const ConceptImages data(settings, static_cast<int>(size));
  Rng init_rng(static_cast<std::uint64_t>(c.seed));
  const std::int64_t label = model->add_class(init_rng.randn({1, model->config().hidden_size}) * 0.02);
  info.class_names.push_back(name);
  info.dit = model->config();
  model->to(device);
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  LoRA lora = concept_lora(model, c, ortho, init_rng, settings);
  lora.attach(model->hooks(), *model);
  ConceptTensors trained(model, lora, label);
  TensorSet train_set(trained.named, false);
  const auto opt = trained.optimizer(c.lr, c.token_lr);
  ctx.report.info(enum_name(method) + " concept '" + name + "': " + std::to_string(trained.lora_numel()) +
                  " LoRA parameters on " + std::to_string(lora.paths().size()) + " layers + a " +
                  std::to_string(trained.table.size(1)) + "-wide token");
  DiffusionObjective objective(NoiseSchedule::by_name(info.schedule, info.num_train_timesteps),
                               prediction_by_name(info.prediction), model->config().learn_sigma);
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  TrainLoop loop(ctx, c.train, {{{"train.", train_set.get()}}, opt.get(), &rng});
  loop.clip(train_set->values);

  auto write_adapter = [&] {
    TensorMap tensors = lora.tensors();
    tensors["concept.embedding"] = trained.table[label].detach();
    save_adapter(ctx.path(c.output), tensors, {method, base_hash, {name}, settings, to_json(c)});
    ctx.report.artifact("adapter", ctx.path(c.output));
  };
  auto preview = [&](const std::string& file, const std::string& title) {
    torch::NoGradGuard no_grad;
    model->eval();
    save_class_grid(model, info, 4, c.preview.sample_steps, c.preview.cfg_scale, static_cast<std::uint64_t>(c.seed) + 3,
                    ctx.path(file), title, &ctx.cancel);
    ctx.report.artifact(file, ctx.path(file));
    model->train();
  };

  // Loop: the concept's images under its token, with CFG label dropout.
  loop.every(c.preview.sample_every, [&](std::int64_t done) {
    preview("preview.png", "step " + std::to_string(done));
    write_adapter();
  });
  model->train();
  const auto on_device = torch::TensorOptions().device(device);
  const std::int64_t batch = c.train.batch;
  loop.run([&](std::int64_t step) {
    // The global batch's images and random numbers, as one process draws them; this rank keeps its rows.
    const Shard& shard = ctx.shard;
    auto images = data.batch(step * batch, batch, &rng);
    auto t = shard_rows(rng.randint(objective.num_timesteps(), {batch}, on_device), shard);
    auto noise = shard_rows(rng.randn(images.sizes(), on_device), shard);
    auto x0 = shard_rows(images, shard).to(device);
    auto y = model->drop_labels(torch::full({x0.size(0)}, label, on_device.dtype(torch::kLong)),
                                shard_rows(rng.rand({batch}, on_device), shard));
    auto terms = objective.losses(model->forward(objective.q_sample(x0, t, noise), t, y), x0, t, noise);
    return TrainStep{terms.loss.mean()};
  });

  // Finish: the adapter, a samples grid and the identity metrics.
  write_adapter();
  preview("samples.png", name + ": " + std::to_string(c.train.steps) + " steps");
  if (!c.probe.empty()) write_identity_metrics(model, info, label, settings, c, ctx);
}

}  // namespace

void lora_concept_job(const ConceptConfig& c, JobContext& ctx) {
  concept_job(c, ctx, AdapterMethod::LoRA);
}

void ortho_concept_job(const ConceptConfig& c, JobContext& ctx) {
  concept_job(c, ctx, AdapterMethod::OrthoLoRA);
}

void merge_job(const MergeConfig& c, JobContext& ctx) {
  if (c.adapters.empty()) fail_field("adapters", "give at least one concept adapter");
  const torch::Device device = select_device(c.device);
  std::vector<double> weights = c.weights;
  if (weights.empty()) weights.assign(c.adapters.size(), 0.6);
  std::vector<AdapterFile> files;
  std::size_t concept_count = 0;  // each concept adapter appends one class to the base's
  for (const auto& path : c.adapters) {
    files.push_back(with_field("adapters", [&] { return load_adapter(path); }));
    concept_count += files.back().tensors.count("concept.embedding");
  }
  const auto t0 = std::chrono::steady_clock::now();
  DiTModelInfo info;
  std::vector<std::pair<LoRA, double>> loras;
  DiT model = load_adapted_model(c.base, c.adapters, weights, &info, &loras, c.block_weights);
  DiT merged = fold_adapters(model, loras);
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
  auto images = generate(merged, info, torch::tensor(labels).to(device), s, rng, cancel_observer(&ctx.cancel));
  images = checked_finite(images, "merge preview").clamp(-1, 1).cpu();
  GridOptions grid;
  grid.columns = static_cast<int>(c.per_concept);
  grid.row_labels = concepts.class_names;
  grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
  grid.title = "merged: " + std::to_string(c.adapters.size()) + " concepts";
  save_png(ctx.path("preview.png"), make_grid(images, grid), {{"atelier.config", json_text(to_json(c))}});
  ctx.report.artifact("preview", ctx.path("preview.png"));

  json metrics = {{"merge_seconds", merge_s}, {"concepts", json::array()}};
  if (!c.probe.empty()) {
    ProbeNet probe = load_probe(c.probe);
    for (std::size_t k = 0; k < c.adapters.size(); ++k) {
      json id = concept_identity(merged, info, static_cast<std::int64_t>(base_classes.size() + k),
                                 files[k].info.settings, c.eval_samples, c.sample_steps, c.cfg_scale,
                                 static_cast<std::uint64_t>(c.seed) + 5, &probe, &ctx.cancel);
      id["adapter"] = c.adapters[k];
      metrics["concepts"].push_back(id);
    }
  }
  write_file_atomic(ctx.path("metrics.json"), json_text(metrics, 2) + "\n");
  ctx.report.metrics({{"merge_seconds", merge_s}});
}

}  // namespace atelier
