#include "adapters/finetune.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "adapters/ortho.h"
#include "core/atomic_file.h"
#include "core/metrics.h"
#include "core/probe.h"
#include "core/runtime.h"
#include "core/training_state.h"
#include "diffusion/generate.h"
#include "diffusion/objective.h"

namespace atelier {
namespace {

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux
}

bool is_preset(const std::string& name) {
  const auto names = dit_preset_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

// The base model and what it is: an Atelier model file, or a preset with random weights.
DiT load_base(const FineTuneConfig& c, DiTModelInfo& info) {
  if (is_preset(c.base)) {
    if (!c.dry_run)
      fail("field 'base': '", c.base,
           "' is a preset name (random weights), usable with dry_run only; give a model file");
    torch::manual_seed(static_cast<std::uint64_t>(c.seed));
    info.dit = dit_preset(c.base);
    for (std::int64_t k = 0; k < info.dit.num_classes; ++k) info.class_names.push_back(std::to_string(k));
    return DiT(info.dit);
  }
  if (!std::filesystem::exists(c.base)) fail("field 'base': ", c.base, " does not exist");
  return with_context([&] { return load_dit_model(c.base, &info); }, "field 'base'");
}

struct Evaluation {
  double probe_accuracy = -1, fd_shapes = -1;
};

}  // namespace

DiT load_adapted_model(const std::string& base, const std::vector<std::string>& adapters,
                       const std::vector<double>& weights, DiTModelInfo* info,
                       std::vector<std::pair<LoRA, double>>* loras, const std::vector<double>& block_weights) {
  if (!weights.empty() && weights.size() != adapters.size())
    fail("field 'adapter_weights': ", weights.size(), " weights for ", adapters.size(), " adapters");
  DiTModelInfo i;
  DiT model = load_generator_model(base, &i);
  const std::string hash = adapters.empty() ? std::string() : model_hash(*model);
  std::vector<AdapterFile> files;
  std::vector<std::pair<std::string, OrthoAllocation>> allocations;
  for (const auto& path : adapters) {
    files.push_back(with_context([&] { return load_adapter(path); }, "field 'adapters'"));
    if (const auto& o = files.back().info.settings; o.contains("ortho"))
      allocations.emplace_back(
          path, OrthoAllocation{o["ortho"]["seed"].get<std::uint64_t>(), o["ortho"]["first"].get<std::int64_t>(),
                                o["ortho"]["rank"].get<std::int64_t>()});
  }
  check_disjoint(allocations);
  for (std::size_t k = 0; k < adapters.size(); ++k) {
    const double w = weights.empty() ? 1.0 : weights[k];
    const AdapterFile& a = files[k];
    auto lora = apply_adapter(model, i, a, adapters[k], base, hash, w);
    if (lora) lora->scale_blocks(block_weights);
    if (lora && loras != nullptr) loras->emplace_back(std::move(*lora), w);
    if (!a.info.config.is_null() && a.info.config.contains("data")) i.data = a.info.config["data"];
  }
  if (info != nullptr) *info = std::move(i);
  return model;
}

void finetune_job(const FineTuneConfig& c, JobContext& ctx) {
  const torch::Device device = select_device(c.device);
  DiTModelInfo info;
  DiT model = load_base(c, info);
  const std::string base_hash = c.dry_run ? std::string() : model_hash(*model);
  const std::int64_t base_size = model->config().input_size;
  const std::int64_t size = c.image_size > 0 ? c.image_size : base_size;
  const shapes::Spec spec = c.data.spec(static_cast<int>(size));
  const auto classes = shapes_class_names(spec);
  if (size % model->config().patch_size != 0)
    fail("field 'image_size': ", size, " is not a multiple of the base model's patch size ",
         model->config().patch_size);
  if (size != base_size) {
    model->set_input_size(size, static_cast<double>(base_size / model->config().patch_size));
    ctx.report.info("resolution adaptation: " + std::to_string(base_size) + " -> " + std::to_string(size) +
                    " (positional grid scaled to the base's)");
  }
  Rng init_rng(static_cast<std::uint64_t>(c.seed));
  retarget_labels(model, info.class_names, classes, init_rng);
  model->to(device);
  Tuning tuning = prepare_tuning(model, c.tune);

  std::int64_t total = 0;  // the model's own parameters (LoRA factors come on top)
  for (const auto& p : model->parameters()) total += p.numel();
  const std::int64_t trainable = tuning.numel();
  const double fraction = static_cast<double>(trainable) / static_cast<double>(total);
  std::int64_t gamma_count = 0, bias_count = 0, table_count = 0;
  for (const auto& [name, t] : tuning.tensors) {
    if (name.find(".gamma_") != std::string::npos)
      gamma_count += t.numel();
    else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0)
      bias_count += t.numel();
    else if (name == "y_embedder.embedding_table.weight")
      table_count += t.numel();
  }
  char line[256];
  std::snprintf(line, sizeof line, "%s on %s: %lld trainable parameters of %lld (%.4f%%)", c.tune.method.c_str(),
                is_preset(c.base) ? c.base.c_str() : "the base", static_cast<long long>(trainable),
                static_cast<long long>(total), 100.0 * fraction);
  ctx.report.info(line);
  std::snprintf(line, sizeof line, "  biases %lld, label table %lld, gammas %lld, lora %lld, other %lld",
                static_cast<long long>(bias_count), static_cast<long long>(table_count),
                static_cast<long long>(gamma_count), static_cast<long long>(tuning.lora ? tuning.lora->numel() : 0),
                static_cast<long long>(trainable - bias_count - table_count - gamma_count -
                                       (tuning.lora ? tuning.lora->numel() : 0)));
  ctx.report.info(line);
  if (c.dry_run) {
    ctx.report.metrics({{"trainable_parameters", static_cast<double>(trainable)},
                        {"model_parameters", static_cast<double>(total)},
                        {"trainable_fraction", fraction}});
    return;
  }

  // Named trainable tensors (DiT tensors, then LoRA factors) and their EMA, checkpointed as sets.
  std::vector<std::pair<std::string, torch::Tensor>> named = tuning.tensors;
  std::vector<bool> scaled = tuning.scaled_lr;
  if (tuning.lora)
    for (std::size_t i = 0; i < tuning.lora->paths().size(); ++i) {
      named.emplace_back(tuning.lora->paths()[i] + ".lora_A.weight", tuning.lora->layers()[i]->down);
      named.emplace_back(tuning.lora->paths()[i] + ".lora_B.weight", tuning.lora->layers()[i]->up);
      scaled.insert(scaled.end(), 2, true);
    }
  TensorSet train_set(named, false), ema_set(named, true);
  std::vector<torch::Tensor> base_group, scaled_group;
  for (std::size_t i = 0; i < named.size(); ++i) (scaled[i] ? scaled_group : base_group).push_back(named[i].second);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!base_group.empty())
    groups.emplace_back(base_group,
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(c.lr).weight_decay(0)));
  if (!scaled_group.empty())
    groups.emplace_back(scaled_group, std::make_unique<torch::optim::AdamWOptions>(
                                          torch::optim::AdamWOptions(c.lr * c.lr_scale).weight_decay(0)));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(c.lr).weight_decay(0));
  std::vector<double> group_lr;
  for (auto& g : opt.param_groups()) group_lr.push_back(static_cast<torch::optim::AdamWOptions&>(g.options()).lr());

  DiffusionObjective objective(NoiseSchedule::by_name(info.schedule, info.num_train_timesteps),
                               prediction_by_name(info.prediction), model->config().learn_sigma);
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  const TrainingParts parts{{{"train.", train_set.get()}, {"ema.", ema_set.get()}}, &opt, &rng};
  const std::int64_t start = ctx.resume ? restore_training_parts(ctx.run_dir, parts) : 0;
  if (start > 0) ctx.report.info("resumed from step " + std::to_string(start));

  DiTModelInfo tuned = info;
  tuned.dit = model->config();
  tuned.class_names = classes;
  tuned.data = to_json(c.data);

  // Runs `f` with the EMA values in the model's trained tensors, then puts the live values back.
  auto with_ema = [&](auto&& f) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> live;
    for (std::size_t i = 0; i < named.size(); ++i) {
      live.push_back(train_set->values[i].detach().clone());
      train_set->values[i].detach().copy_(ema_set->values[i]);
    }
    model->eval();
    f();
    for (std::size_t i = 0; i < named.size(); ++i) train_set->values[i].detach().copy_(live[i]);
    model->train();
  };

  std::optional<ProbeNet> probe;
  torch::Tensor reference;
  if (!c.probe.empty()) {
    if (!std::filesystem::exists(c.probe)) fail("field 'probe': ", c.probe, " does not exist (\"\" skips metrics)");
    probe = load_probe(c.probe);
    reference = shapes::make_batch(spec, 2, 0, c.reference_samples).images;
  }
  std::vector<std::int64_t> probe_labels;
  for (const auto& name : classes)
    for (std::int64_t k = 0; k < c.eval_per_class; ++k) probe_labels.push_back(probe_label_of(name));
  auto evaluate = [&](const std::string& file, const std::string& title) {
    Evaluation e;
    auto images = save_class_grid(model, tuned, c.eval_per_class, c.sample_steps, c.cfg_scale,
                                  static_cast<std::uint64_t>(c.seed) + 5, ctx.path(file), title);
    ctx.report.artifact(file, ctx.path(file));
    if (probe) {
      e.probe_accuracy = probe_accuracy(*probe, images, torch::tensor(probe_labels, torch::kLong));
      e.fd_shapes = fd_shapes(*probe, images, reference);
    }
    return e;
  };

  // "Before": the base model as re-targeted, at step 0 (kept across resumes).
  Evaluation before;
  const auto before_file = ctx.path("before.json");
  if (std::filesystem::exists(before_file)) {
    const json b = load_json_file(before_file);
    before = {b.value("probe_accuracy", -1.0), b.value("fd_shapes", -1.0)};
  } else {
    with_ema([&] { before = evaluate("before.png", "before: base model"); });
    write_file_atomic(before_file,
                      json{{"probe_accuracy", before.probe_accuracy}, {"fd_shapes", before.fd_shapes}}.dump(2));
  }

  auto write_adapter = [&] {
    AdapterInfo a{c.tune.method, base_hash, classes, tuning.settings, to_json(c)};
    TensorMap tensors;
    for (std::size_t i = 0; i < named.size(); ++i) tensors[named[i].first] = ema_set->values[i].detach();
    if (tuning.lora)
      for (const auto& [name, t] : tuning.lora->tensors())
        if (name.size() > 6 && name.compare(name.size() - 6, 6, ".alpha") == 0) tensors[name] = t;
    save_adapter(ctx.path(c.output), tensors, a);
    ctx.report.artifact("adapter", ctx.path(c.output));
  };

  model->train();
  double train_seconds = 0, data_seconds = 0;
  for (std::int64_t step = start; step < c.steps; ++step) {
    if (ctx.cancel.requested()) {
      ctx.report.artifact("checkpoint", save_training_parts(ctx.run_dir, step, parts));
      throw Cancelled();
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double warm = c.warmup > 0 && step < c.warmup ? static_cast<double>(step + 1) / c.warmup : 1.0;
    for (std::size_t g = 0; g < opt.param_groups().size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(opt.param_groups()[g].options()).lr(group_lr[g] * warm);
    const auto batch = shapes::make_batch(spec, 0, step * c.batch, c.batch);
    data_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto terms = training_terms(model, objective, batch, rng);
    auto loss = terms.loss.mean();
    opt.zero_grad();
    loss.backward();
    if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(train_set->values, c.grad_clip);
    opt.step();
    {
      torch::NoGradGuard no_grad;
      const double decay = step < c.warmup ? 0.0 : c.ema_decay;
      for (std::size_t i = 0; i < named.size(); ++i)
        ema_set->values[i].mul_(decay).add_(train_set->values[i].detach(), 1.0 - decay);
    }
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ctx.report.progress("train", step + 1, c.steps,
                        {{"loss", loss.item<double>()}, {"mse", terms.mse.mean().item<double>()}});
    const std::int64_t done = step + 1;
    if (done % c.checkpoint_every == 0 && done < c.steps)
      ctx.report.artifact("checkpoint", save_training_parts(ctx.run_dir, done, parts));
    if (done % c.sample_every == 0 && done < c.steps) {
      with_ema([&] {
        save_class_grid(model, tuned, 4, c.sample_steps, c.cfg_scale, static_cast<std::uint64_t>(c.seed) + 3,
                        ctx.path("preview.png"), "step " + std::to_string(done));
      });
      ctx.report.artifact("preview", ctx.path("preview.png"));
      write_adapter();
    }
  }

  write_adapter();
  Evaluation after;
  with_ema(
      [&] { after = evaluate("after.png", "after: " + c.tune.method + ", " + std::to_string(c.steps) + " steps"); });
  if (c.fold) {
    with_ema([&] {
      std::vector<std::pair<LoRA, double>> loras;
      if (tuning.lora) loras.emplace_back(*tuning.lora, 1.0);
      TensorMap folded = folded_tensors(model, loras);
      DiTModelInfo out = tuned;
      DiT plain(out.dit);
      load_module_tensors(*plain, folded, "", "folded model");
      save_dit_model(ctx.path("model.safetensors"), plain, out, to_json(c));
    });
    ctx.report.artifact("model", ctx.path("model.safetensors"));
  }
  const double steps_run = static_cast<double>(c.steps - start);
  json m = {
      {"method", c.tune.method},
      {"trainable_parameters", trainable},
      {"model_parameters", total},
      {"trainable_fraction", fraction},
      {"adapter_bytes", static_cast<std::int64_t>(std::filesystem::file_size(ctx.path(c.output)))},
      {"steps_per_second", train_seconds > 0 ? steps_run / train_seconds : 0.0},
      {"compute_steps_per_second", train_seconds > data_seconds ? steps_run / (train_seconds - data_seconds) : 0.0},
      {"data_seconds", data_seconds},
      {"peak_rss_mb", peak_rss_mb()},
      {"image_size", size},
      {"before", {{"probe_accuracy", before.probe_accuracy}, {"fd_shapes", before.fd_shapes}}},
      {"after", {{"probe_accuracy", after.probe_accuracy}, {"fd_shapes", after.fd_shapes}}}};
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  std::map<std::string, double> flat = {{"fd_shapes_before", before.fd_shapes},
                                        {"fd_shapes_after", after.fd_shapes},
                                        {"probe_accuracy_before", before.probe_accuracy},
                                        {"probe_accuracy_after", after.probe_accuracy},
                                        {"trainable_fraction", fraction},
                                        {"steps_per_second", m["steps_per_second"].get<double>()}};
  ctx.report.metrics(flat);
}

}  // namespace atelier
