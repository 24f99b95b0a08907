#include "adapters/finetune.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "adapters/lora_files.h"
#include "adapters/ortho.h"
#include "adapters/sd_tuning.h"
#include "core/atomic_file.h"
#include "core/report.h"
#include "core/runtime.h"
#include "data/training_images.h"
#include "diffusion/generate.h"
#include "diffusion/objective.h"
#include "diffusion/stable_diffusion.h"
#include "diffusion/train_base.h"
#include "eval/class_metrics.h"
#include "eval/metrics.h"

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
      fail_field("base", "'", c.base,
                 "' is a preset name (random weights), usable with dry_run only; give a model file");
    torch::manual_seed(static_cast<std::uint64_t>(c.seed));
    info.dit = dit_preset(c.base);
    for (std::int64_t k = 0; k < info.dit.num_classes; ++k) info.class_names.push_back(std::to_string(k));
    return DiT(info.dit);
  }
  if (!std::filesystem::exists(c.base)) fail_field("base", c.base, " does not exist");
  return with_field("base", [&] { return load_dit_model(c.base, &info); });
}

// The target domain: a Shapes domain (`data`), or the images of the `images` folder, loaded once at the
// training size.
TrainingImages load_target(const FineTuneConfig& c, int size) {
  if (c.images.empty()) return TrainingImages::from_shapes(c.data.spec(size));
  return with_field(
      "images", [&] { return TrainingImages::from_folder(c.images, size, static_cast<std::uint64_t>(c.seed) + 7); });
}

// Points the base at the target domain: the training size (positional grid scaled to the base's) and
// a label table re-targeted to the domain's classes; info.data records the domain (its ShapesData, or
// the folder's path).
TrainingImages retarget(DiT& model, DiTModelInfo& info, const FineTuneConfig& c, Rng& init_rng, JobContext& ctx) {
  const std::int64_t base_size = model->config().input_size;
  const std::int64_t size = c.image_size > 0 ? c.image_size : base_size;
  if (size % model->config().patch_size != 0)
    fail_field("image_size", size, " is not a multiple of the base model's patch size ", model->config().patch_size);
  TrainingImages target = load_target(c, static_cast<int>(size));
  if (target.is_folder())
    ctx.report.info("target: " + std::to_string(target.images().size(0)) + " images of " +
                    std::to_string(target.classes().size()) + " class(es) in " + printable(target.folder(), false) +
                    " (the Shapes fields are ignored)");
  if (size != base_size) {
    model->set_input_size(size, static_cast<double>(base_size / model->config().patch_size));
    ctx.report.info("resolution adaptation: " + std::to_string(base_size) + " -> " + std::to_string(size) +
                    " (positional grid scaled to the base's)");
  }
  retarget_labels(model, info.class_names, target.classes(), init_rng, c.label_init);
  info.class_names = target.classes();
  info.data = !target.is_folder() ? to_json(c.data) : json(c.images);
  return target;
}

// Logs what trains (by kind of tensor) and returns {"trainable_parameters", "model_parameters",
// "trainable_fraction"}.
json report_trainable(DiT& model, const Tuning& tuning, const FineTuneConfig& c, JobContext& ctx) {
  std::int64_t total = 0;  // the model's own parameters (LoRA factors come on top)
  for (const auto& p : model->parameters()) total += p.numel();
  const std::int64_t trainable = tuning.numel();
  const std::int64_t lora = tuning.lora ? tuning.lora->numel() : 0;
  std::int64_t gammas = 0, biases = 0, table = 0;
  for (const auto& [name, t] : tuning.tensors) {
    if (name.find(".gamma_") != std::string::npos)
      gammas += t.numel();
    else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0)
      biases += t.numel();
    else if (name == "y_embedder.embedding_table.weight")
      table += t.numel();
  }
  const double fraction = static_cast<double>(trainable) / static_cast<double>(total);
  char line[256];
  std::snprintf(line, sizeof line, "%s on %s: %lld trainable parameters of %lld (%.4f%%)",
                enum_name(c.tune.method).c_str(), is_preset(c.base) ? c.base.c_str() : "the base",
                static_cast<long long>(trainable), static_cast<long long>(total), 100.0 * fraction);
  ctx.report.info(line);
  std::snprintf(line, sizeof line, "  biases %lld, label table %lld, gammas %lld, lora %lld, other %lld",
                static_cast<long long>(biases), static_cast<long long>(table), static_cast<long long>(gammas),
                static_cast<long long>(lora), static_cast<long long>(trainable - biases - table - gammas - lora));
  ctx.report.info(line);
  return {{"trainable_parameters", trainable}, {"model_parameters", total}, {"trainable_fraction", fraction}};
}

struct Evaluation {
  double probe_accuracy = -1, fd_shapes = -1;
  json to_json() const { return {{"probe_accuracy", probe_accuracy}, {"fd_shapes", fd_shapes}}; }
  static Evaluation from_json(const json& j) { return {j.value("probe_accuracy", -1.0), j.value("fd_shapes", -1.0)}; }
};

// metrics.json of a run: parameter counts, adapter size, speed, memory and the before/after metrics; the
// headline figures also go to the job's metrics event.
void write_metrics(const json& counts, const FineTuneConfig& c, const Evaluation& before, const Evaluation& after,
                   const std::string& fd_reference, double steps_run, double seconds, double data_seconds,
                   std::int64_t image_size, JobContext& ctx) {
  json m = counts;
  m.update({{"method", enum_name(c.tune.method)},
            {"adapter_bytes", static_cast<std::int64_t>(std::filesystem::file_size(ctx.path(c.output)))},
            {"steps_per_second", seconds > 0 ? steps_run / seconds : 0.0},
            {"compute_steps_per_second", seconds > data_seconds ? steps_run / (seconds - data_seconds) : 0.0},
            {"data_seconds", data_seconds},
            {"peak_rss_mb", peak_rss_mb()},
            {"image_size", image_size},
            {"fd_reference", fd_reference},
            {"before", before.to_json()},
            {"after", after.to_json()}});
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  ctx.report.metrics({{"fd_shapes_before", before.fd_shapes},
                      {"fd_shapes_after", after.fd_shapes},
                      {"probe_accuracy_before", before.probe_accuracy},
                      {"probe_accuracy_after", after.probe_accuracy},
                      {"trainable_fraction", counts["trainable_fraction"].get<double>()},
                      {"steps_per_second", m["steps_per_second"].get<double>()}});
}

// Samples eval_per_class images per class as a grid and, with a probe, measures FD-shapes against real
// images of the target domain (Shapes: its test split; a folder: its own images) and probe accuracy when
// the probe knows the target's classes.
class Evaluator {
 public:
  Evaluator(const FineTuneConfig& c, const TrainingImages& target, JobContext& ctx)
      : c_(c), metrics_(make_metrics(c, target)) {
    if (!metrics_.has_probe()) return;
    if (!metrics_.knows_classes())
      ctx.report.info("no probe accuracy: the probe does not know class '" + metrics_.unknown_class() +
                      "' (it knows the Shapes classes and glyphs)");
    if (!metrics_.has_reference())
      ctx.report.info("no FD-shapes: it needs at least 2 images in " + printable(c.images, false));
    else
      reference_ = (!target.is_folder() ? "Shapes test split, "
                                        : printable(target.folder(), false) + " (the training images), ") +
                   std::to_string(metrics_.reference_size()) + " images";
  }
  Evaluation run(DiT& model, const DiTModelInfo& info, const std::string& file, const std::string& title,
                 JobContext& ctx) {
    auto images = save_class_grid(model, info, c_.eval_per_class, c_.preview.sample_steps, c_.preview.cfg_scale,
                                  static_cast<std::uint64_t>(c_.seed) + 5, ctx.path(file), title, &ctx.cancel);
    ctx.report.artifact(file, ctx.path(file));
    Evaluation e;
    if (metrics_.knows_classes()) e.probe_accuracy = metrics_.class_accuracy(images);
    if (metrics_.has_reference()) e.fd_shapes = metrics_.fd_shapes(images);
    return e;
  }
  // What FD-shapes is measured against (empty: not measured).
  const std::string& reference() const { return reference_; }

 private:
  static ClassGridMetrics make_metrics(const FineTuneConfig& c, const TrainingImages& t) {
    if (!t.is_folder()) return {c.probe, t.classes(), c.eval_per_class, &*t.spec(), c.reference_samples};
    if (c.probe.empty() || t.images().size(0) < 2) return {c.probe, t.classes(), c.eval_per_class, torch::Tensor()};
    return {c.probe, t.classes(), c.eval_per_class, t.folder_subset(c.reference_samples).images};
  }
  const FineTuneConfig& c_;
  ClassGridMetrics metrics_;
  std::string reference_;
};

}  // namespace

DiT load_adapted_model(const std::string& base, const std::vector<std::string>& adapters,
                       const std::vector<double>& weights, DiTModelInfo* info,
                       std::vector<std::pair<LoRA, double>>* loras, const std::vector<double>& block_weights) {
  if (!weights.empty() && weights.size() != adapters.size())
    fail_field("adapter_weights", weights.size(), " weights for ", adapters.size(), " adapters");
  DiTModelInfo i;
  DiT model = load_generator_model(base, &i);
  const std::string hash = adapters.empty() ? std::string() : model_hash(*model);
  // Atelier adapter files (hash-checked, ortho slots checked for overlap) and LoRA files of the other
  // dialects (PEFT, kohya: matched layer by layer against the base).
  std::vector<std::optional<AdapterFile>> files;
  std::vector<std::pair<std::string, OrthoAllocation>> allocations;
  for (const auto& path : adapters) {
    files.push_back(with_field("adapters", [&]() -> std::optional<AdapterFile> {
      if (!std::filesystem::exists(path)) fail(path, " does not exist");
      return is_adapter_file(path) ? std::optional(load_adapter(path)) : std::nullopt;
    }));
    if (!files.back()) continue;
    if (const auto& o = files.back()->info.settings; o.contains("ortho"))
      allocations.emplace_back(
          path, OrthoAllocation{o["ortho"]["seed"].get<std::uint64_t>(), o["ortho"]["first"].get<std::int64_t>(),
                                o["ortho"]["rank"].get<std::int64_t>()});
  }
  check_disjoint(allocations);
  for (std::size_t k = 0; k < adapters.size(); ++k) {
    const double w = weights.empty() ? 1.0 : weights[k];
    std::optional<LoRA> lora;
    if (files[k]) {
      const AdapterFile& a = *files[k];
      lora = apply_adapter(model, i, a, adapters[k], base, hash, w);
      if (a.info.settings.contains("data")) i.data = a.info.settings["data"];  // difffit: the target domain
    } else {
      lora = with_field("adapters", [&] {
        return to_lora(read_lora_file(adapters[k], lora_layer_paths(*model)), *model, adapters[k]);
      });
      lora->to(model->pos_embed.device());
      lora->attach(model->hooks(), *model, w);
    }
    if (lora) lora->scale_blocks(block_weights);
    if (lora && loras != nullptr) loras->emplace_back(std::move(*lora), w);
  }
  if (info != nullptr) *info = std::move(i);
  return model;
}

void finetune_job(const FineTuneConfig& c, JobContext& ctx) {
  if (!is_preset(c.base) && is_stable_diffusion(c.base)) return sd_difffit_job(c, ctx);
  // Config -> build: the base pointed at the target domain, the method's trainable tensors.
  const torch::Device device = select_device(c.device);
  if (c.fold && c.output == "model.safetensors")
    fail_field("output", "'model.safetensors' is where \"fold\" writes the folded model; name the adapter otherwise");
  DiTModelInfo info;
  DiT model = load_base(c, info);
  const std::string base_hash = c.dry_run ? std::string() : model_hash(*model);
  Rng init_rng(static_cast<std::uint64_t>(c.seed));  // new label rows, then LoRA's down-projections
  const TrainingImages target = retarget(model, info, c, init_rng, ctx);
  model->to(device);
  Tuning tuning = prepare_tuning(model, c.tune, &init_rng);
  info.dit = model->config();
  const json counts = report_trainable(model, tuning, c, ctx);
  if (c.dry_run) {
    std::map<std::string, double> m;
    for (const auto& [key, value] : counts.items()) m[key] = value.get<double>();
    ctx.report.metrics(m);
    return;
  }
  TrainedTensors trained(tuning);
  const auto opt = trained.optimizer(c.lr, c.lr_scale);
  DiffusionObjective objective(NoiseSchedule::by_name(info.schedule, info.num_train_timesteps),
                               prediction_by_name(info.prediction), model->config().learn_sigma);
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  TrainLoop loop(ctx, c.train, {{{"train.", trained.live.get()}, {"ema.", trained.ema.get()}}, opt.get(), &rng},
                 c.lr_decay);
  loop.clip(trained.live->values);
  loop.ema(*trained.ema, *trained.live, c.ema_decay);

  // "Before": the base model as re-targeted, at step 0 (kept across resumes in before.json).
  Evaluator evaluator(c, target, ctx);
  Evaluation before;
  if (const auto file = ctx.path("before.json"); std::filesystem::exists(file)) {
    before = Evaluation::from_json(load_json_file(file));
  } else {
    trained.with_ema(model, [&] { before = evaluator.run(model, info, "before.png", "before: base model", ctx); });
    write_file_atomic(file, before.to_json().dump(2));
  }
  auto write_adapter = [&] {
    json settings = tuning.settings;
    settings["data"] = info.data;  // the target domain, for `sample` with the adapter
    save_adapter(ctx.path(c.output), trained.ema_tensors(tuning),
                 {adapter_method(c.tune.method), base_hash, info.class_names, settings, to_json(c)});
    ctx.report.artifact("adapter", ctx.path(c.output));
  };

  // Loop: a preview grid (4 EMA samples per class) and the adapter so far on the preview cadence.
  loop.every(c.preview.sample_every, [&](std::int64_t done) {
    trained.with_ema(model, [&] {
      save_class_grid(model, info, 4, c.preview.sample_steps, c.preview.cfg_scale,
                      static_cast<std::uint64_t>(c.seed) + 3, ctx.path("preview.png"), "step " + std::to_string(done),
                      &ctx.cancel);
    });
    ctx.report.artifact("preview", ctx.path("preview.png"));
    write_adapter();
  });
  double data_seconds = 0;
  model->train();
  loop.run([&](std::int64_t step) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t b = c.train.batch;  // this rank's rows of the global batch (all of it in one process)
    const auto batch = target.batch(step * b + ctx.shard.first(b), ctx.shard.size(b));
    data_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto terms = training_terms(model, objective, batch, rng, ctx.shard);
    return TrainStep{terms.loss.mean(), {{"mse", terms.mse.mean()}}};
  });

  // Finish: the adapter, "after" metrics, the folded model, metrics.json.
  write_adapter();
  Evaluation after;
  const std::string title = "after: " + enum_name(c.tune.method) + ", " + std::to_string(c.train.steps) + " steps";
  trained.with_ema(model, [&] { after = evaluator.run(model, info, "after.png", title, ctx); });
  if (c.fold) {
    trained.with_ema(model, [&] {
      std::vector<std::pair<LoRA, double>> loras;
      if (tuning.lora) loras.emplace_back(*tuning.lora, 1.0);
      DiT plain = fold_adapters(model, loras);
      save_dit_model(ctx.path("model.safetensors"), plain, info, to_json(c));
    });
    ctx.report.artifact("model", ctx.path("model.safetensors"));
  }
  write_metrics(counts, c, before, after, evaluator.reference(), static_cast<double>(c.train.steps - loop.start()),
                loop.step_seconds(), data_seconds, model->config().input_size, ctx);
}

}  // namespace atelier
