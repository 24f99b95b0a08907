#include "distill/tta.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/image.h"
#include "core/runtime.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/corruptions.h"
#include "data/folder_dataset.h"
#include "eval/clip.h"
#include "eval/labels.h"
#include "samplers/schedule.h"

namespace atelier {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// up(down(x)) by `factor`: area average down, bilinear up (the guidance compares low frequencies only).
torch::Tensor low_pass(const torch::Tensor& x, std::int64_t factor) {
  namespace F = torch::nn::functional;
  if (factor <= 1) return x;
  auto down = F::avg_pool2d(x, F::AvgPool2dFuncOptions(factor).stride(factor));
  return F::interpolate(down, F::InterpolateFuncOptions()
                                  .size(std::vector<std::int64_t>{x.size(2), x.size(3)})
                                  .mode(torch::kBilinear)
                                  .align_corners(false));
}

// Denoising timesteps: `steps` values from `start` down to 0, evenly spaced.
std::vector<std::int64_t> projection_timesteps(std::int64_t start, std::int64_t steps) {
  std::vector<std::int64_t> ts;
  if (steps == 1) return {start};
  for (std::int64_t i = 0; i < steps; ++i)
    ts.push_back(
        std::llround(static_cast<double>(start) * static_cast<double>(steps - 1 - i) / static_cast<double>(steps - 1)));
  ts.erase(std::unique(ts.begin(), ts.end()), ts.end());
  return ts;
}

torch::Tensor project_batch(DiT& model, const NoiseSchedule& schedule, Prediction prediction, const torch::Tensor& ref,
                            const ProjectionSettings& s, Rng& rng) {
  const auto device = ref.device();
  const auto n = ref.size(0);
  const auto ts = projection_timesteps(s.start, s.steps);
  const auto null = torch::full({n}, model->null_class(), torch::dtype(torch::kLong).device(device));
  const torch::Tensor ref_low = low_pass(ref, s.downsample);
  const double abar0 = schedule.abar(ts.front());
  torch::Tensor x = std::sqrt(abar0) * ref + std::sqrt(1.0 - abar0) * rng.randn(ref.sizes()).to(device);
  torch::Tensor x0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const std::int64_t t = ts[i];
    const double abar = schedule.abar(t);
    const double abar_prev = i + 1 < ts.size() ? schedule.abar(ts[i + 1]) : 1.0;
    const auto t_vec = torch::full({n}, static_cast<double>(t), torch::dtype(torch::kFloat).device(device));
    torch::Tensor grad;
    {
      const bool guided = s.guidance > 0;
      torch::AutoGradMode grad_mode(guided);
      auto xt = x.detach().set_requires_grad(guided);
      auto out = model->forward(xt, t_vec, null);
      x0 = to_x0_eps(prediction, out.narrow(1, 0, ref.size(1)), xt, abar).x0.clamp(-1, 1);
      if (guided) {
        // One norm per image (DDA takes one over the batch; per image keeps projections batch-independent).
        auto distance = (ref_low - low_pass(x0, s.downsample)).flatten(1).norm(2, 1).sum();
        grad = torch::autograd::grad({distance}, {xt})[0];
      }
      x0 = x0.detach();
    }
    torch::NoGradGuard no_grad;
    if (i + 1 == ts.size()) break;
    const auto eps = (x - std::sqrt(abar) * x0) / std::sqrt(1.0 - abar);
    const double sigma =
        s.eta * std::sqrt((1.0 - abar_prev) / (1.0 - abar)) * std::sqrt(std::max(0.0, 1.0 - abar / abar_prev));
    x = std::sqrt(abar_prev) * x0 + std::sqrt(std::max(0.0, 1.0 - abar_prev - sigma * sigma)) * eps;
    if (sigma > 0) x = x + sigma * rng.randn(ref.sizes()).to(device);
    if (grad.defined()) x = x - s.guidance * grad;
  }
  return x0;
}

Metadata classifier_metadata(const Metadata& source, const json& config, const std::string& source_path) {
  Metadata meta = {
      {"atelier.kind", "shapes_probe"}, {"atelier.config", json_text(config)}, {"sda.source", source_path}};
  for (const char* key : {"probe.width", "probe.image_size"})
    if (auto it = source.find(key); it != source.end()) meta[key] = it->second;
  return meta;
}

double accuracy(const torch::Tensor& scores, const torch::Tensor& labels) {
  return scores.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
}

}  // namespace

torch::Tensor dda_project(DiT& model, const DiTModelInfo& info, const torch::Tensor& images,
                          const ProjectionSettings& s, Rng& rng, const CancelToken* cancel) {
  if (s.start >= info.num_train_timesteps)
    fail_field("project_t", s.start, " is not below the model's ", info.num_train_timesteps, " training timesteps");
  if (images.size(2) % s.downsample != 0 || images.size(3) % s.downsample != 0)
    fail_field("downsample", s.downsample, " does not divide the image size ", images.size(3), "x", images.size(2));
  const NoiseSchedule schedule = NoiseSchedule::by_name(info.schedule, info.num_train_timesteps);
  const Prediction prediction = prediction_by_name(info.prediction);
  const auto device = model->pos_embed.device();
  FrozenParameters frozen(*model);
  model->eval();
  std::vector<torch::Tensor> out;
  for (std::int64_t first = 0; first < images.size(0); first += s.batch) {
    if (cancel != nullptr && cancel->requested()) throw Cancelled();
    const auto len = std::min(s.batch, images.size(0) - first);
    auto ref = images.narrow(0, first, len).to(device, torch::kFloat);
    out.push_back(project_batch(model, schedule, prediction, ref, s, rng).cpu());
  }
  return checked_finite(torch::cat(out), "projected images");
}

ShapesClassifier ShapesClassifier::load(const std::string& path, const std::vector<std::string>& classes,
                                        const std::string& field) {
  ShapesClassifier c;
  c.net = with_field(field, [&] { return load_probe(path); });
  c.net->eval();
  std::vector<std::int64_t> labels;
  for (const auto& name : classes) labels.push_back(with_field(field, [&] { return probe_label_of(name); }));
  c.labels = torch::tensor(labels);
  c.classes = classes;
  return c;
}

torch::Tensor ShapesClassifier::logits(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  net->eval();
  const auto device = net->parameters().front().device();
  std::vector<torch::Tensor> out;
  for (std::int64_t first = 0; first < images.size(0); first += 256) {
    const auto len = std::min<std::int64_t>(256, images.size(0) - first);
    auto logits = net->forward(images.narrow(0, first, len).to(device, torch::kFloat)).first;
    out.push_back(logits.index_select(1, labels.to(device)).cpu());
  }
  return torch::cat(out);
}

// ---- tta_sda ------------------------------------------------------------------------------------------

void sda_job(const SdaConfig& c, JobContext& ctx) {
  // Config -> build: the model, the classes, the source classifier and the copy that is fine-tuned.
  const torch::Device device = select_device(c.device);
  DiTModelInfo info;
  DiT model = with_field("model", [&] { return load_dit_model(c.model, &info); });
  if (model->config().in_channels != 3) fail_field("model", "is a latent model; tta_sda needs a pixel-space DiT");
  model->to(device);
  const std::vector<std::string> classes = c.classes.empty() ? info.class_names : c.classes;
  const auto to_model = class_labels(info, classes, "classes");
  ShapesClassifier source = ShapesClassifier::load(c.classifier, classes, "classifier");
  ShapesClassifier tuned = ShapesClassifier::load(c.classifier, classes, "classifier");
  tuned.net->to(device);

  // Synthetic data (conditional, guidance as configured) and its projection, guided by itself; written
  // once so a resumed run starts at the fine-tuning.
  const auto synthetic_path = ctx.path("synthetic.safetensors");
  torch::Tensor images, projected, labels;
  const auto k = static_cast<std::int64_t>(classes.size());
  bool reuse = false;  // the earlier run's, unless a resume changed per_class
  if (std::filesystem::exists(synthetic_path)) {
    auto f = safetensors::load(synthetic_path);
    images = f.tensors.at("images");
    projected = f.tensors.at("projected");
    labels = f.tensors.at("labels");
    reuse = images.size(0) == k * c.per_class;
  }
  if (reuse) {
    ctx.report.info("synthetic data: " + std::to_string(images.size(0)) + " images from the earlier run");
  } else {
    Rng rng(static_cast<std::uint64_t>(c.seed));
    labels = torch::arange(k).repeat_interleave(c.per_class);
    const auto model_label = torch::tensor(to_model).index_select(0, labels);
    std::vector<torch::Tensor> made;
    const auto t0 = Clock::now();
    for (std::int64_t first = 0; first < labels.size(0); first += c.projection.batch) {
      const auto len = std::min(c.projection.batch, labels.size(0) - first);
      made.push_back(generate(model, info, model_label.narrow(0, first, len).to(device), c.sampler, rng,
                              cancel_observer(&ctx.cancel))
                         .cpu());
      ctx.report.progress("synthesise", first + len, labels.size(0), {});
    }
    images = checked_finite(torch::cat(made), "synthetic images").clamp(-1, 1);
    const double synth_seconds = seconds_since(t0);
    const auto t1 = Clock::now();
    projected = dda_project(model, info, images, c.projection, rng, &ctx.cancel);
    ctx.report.info("synthesised " + std::to_string(images.size(0)) + " images in " + std::to_string(synth_seconds) +
                    " s, projected in " + std::to_string(seconds_since(t1)) + " s");
    safetensors::save(synthetic_path, {{"images", images}, {"projected", projected}, {"labels", labels}},
                      {{"atelier.kind", "sda_synthetic"}, {"classes", json(classes).dump()}});
    GridOptions grid;
    grid.columns = static_cast<int>(std::min<std::int64_t>(c.per_class, 8));
    grid.scale = 2;
    grid.title = "synthetic (top) and projected (bottom), one class per row pair";
    std::vector<torch::Tensor> rows;
    for (std::int64_t i = 0; i < k; ++i) {
      rows.push_back(images.narrow(0, i * c.per_class, grid.columns));
      rows.push_back(projected.narrow(0, i * c.per_class, grid.columns));
      grid.row_labels.push_back(classes[static_cast<std::size_t>(i)]);
      grid.row_labels.push_back("projected");
    }
    save_png(ctx.path("synthetic.png"), make_grid(torch::cat(rows), grid));
    ctx.report.artifact("synthetic.png", ctx.path("synthetic.png"));
  }
  const auto probe_labels = tuned.labels.index_select(0, labels);
  const double source_raw = accuracy(source.logits(images), labels);
  const double source_projected = accuracy(source.logits(projected), labels);

  // Loop: cross-entropy of the classifier's label head on projected synthetic images; batch `step` is a
  // function of (seed, step), so a resumed run draws the same batches.
  auto params = tuned.net->parameters();
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  TrainLoop loop(ctx, c.train, {{{"model.", tuned.net.get()}}, &opt, &rng}, LrDecay::Cosine);
  loop.run([&](std::int64_t step) {
    Rng pick(static_cast<std::uint64_t>(c.seed) * 1000003ull + static_cast<std::uint64_t>(step));
    const auto idx = shard_rows(pick.randint(projected.size(0), {c.train.batch}), ctx.shard);  // this rank's rows
    tuned.net->train();
    auto x = projected.index_select(0, idx).to(device);
    auto logits = tuned.net->forward(x).first;
    return TrainStep{torch::cross_entropy_loss(logits, probe_labels.index_select(0, idx).to(device))};
  });

  // Finish: the fine-tuned classifier and its accuracy on the synthetic sets.
  const double tuned_projected = accuracy(tuned.logits(projected), labels);
  safetensors::save(ctx.path(c.output), module_tensors(*tuned.net),
                    classifier_metadata(safetensors::Reader(c.classifier).header().metadata, to_json(c), c.classifier));
  ctx.report.artifact("model", ctx.path(c.output));
  json m = {{"classes", classes},
            {"synthetic_images", images.size(0)},
            {"source_accuracy_synthetic", source_raw},
            {"source_accuracy_projected", source_projected},
            {"tuned_accuracy_projected", tuned_projected},
            {"device", device.str()}};
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  ctx.report.metrics({{"source_accuracy_projected", source_projected}, {"tuned_accuracy_projected", tuned_projected}});
}

// ---- tta_eval -----------------------------------------------------------------------------------------

namespace {

struct TestSet {
  std::string name;
  torch::Tensor clean;   // [N, 3, H, W] or undefined (folder sets)
  torch::Tensor images;  // what the classifier meets
  torch::Tensor labels;  // [N] indices into the class list
};

TestSet folder_set(const std::filesystem::path& root, const std::string& name, std::int64_t count, int size,
                   const DiTModelInfo& info) {
  const auto folder = with_field("images", [&] { return FolderDataset::scan(root); });
  if (folder.classes().empty())
    fail_field("images", root.string(), " has no class sub-folders (one per class, named after the model's classes)");
  std::vector<std::size_t> idx;
  for (std::size_t i = 0; i < folder.size() && static_cast<std::int64_t>(i) < count; ++i) idx.push_back(i);
  auto [images, labels] = folder.batch(idx, size);
  return {name, {}, images, torch::tensor(class_labels(info, folder.classes(), "images")).index_select(0, labels)};
}

torch::Tensor corrupt_images(const torch::Tensor& clean, const std::string& corruption, int severity,
                             std::uint64_t seed) {
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < clean.size(0); ++i)
    out.push_back(image_to_tensor(corrupt(tensor_to_image(clean[i]), corruption, severity, corruption_seed(seed, i))));
  return torch::stack(out);
}

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", 100.0 * v);
  return buf;
}

}  // namespace

void tta_eval_job(const TtaEvalConfig& c, JobContext& ctx) {
  // Config -> build: the model, the class list, the classifiers, the test sets.
  const torch::Device device = select_device(c.device);
  auto wants = [&](const std::string& m) {
    return std::find(c.methods.begin(), c.methods.end(), m) != c.methods.end();
  };
  if (c.methods.empty()) fail_field("methods", "is empty; choose from source, dda, dda_ensemble, sda");
  const bool project = wants("dda") || wants("dda_ensemble") || wants("sda");
  DiTModelInfo info;
  DiT model = with_field("model", [&] { return load_dit_model(c.model, &info); });
  if (model->config().in_channels != 3) fail_field("model", "is a latent model; tta_eval needs a pixel-space DiT");
  model->to(device);
  const int size = static_cast<int>(model->config().input_size);
  for (const auto& name : c.corruptions)
    with_field("corruptions", [&] { check_corruption(name, static_cast<int>(c.severity)); });

  std::vector<std::string> classes;
  std::vector<std::function<TestSet()>> sets;  // built lazily: a resumed run skips finished ones
  std::vector<std::string> set_names;
  if (!c.images.empty()) {
    const std::filesystem::path root = c.images;  // exists and is a folder: the runner checked (Input::Folder)
    classes = info.class_names;
    std::vector<std::filesystem::path> subsets;
    for (const auto& e : std::filesystem::directory_iterator(root)) {
      const auto n = e.path().filename().string();
      const auto& known = corruption_names();
      if (e.is_directory() && (n == "clean" || std::find(known.begin(), known.end(), n) != known.end()))
        subsets.push_back(e.path());
    }
    std::sort(subsets.begin(), subsets.end());
    if (subsets.empty()) subsets.push_back(root);
    for (const auto& s : subsets) {
      const std::string name = s == root ? root.filename().string() : s.filename().string();
      set_names.push_back(name);
      sets.push_back([=, &info] { return folder_set(s, name, c.count, size, info); });
    }
  } else {
    // Without classes, the model's own training data (classes, rotation, backgrounds): its test split is
    // the source domain the corruptions shift.
    ShapesData data = c.data;
    if (data.classes.empty() && data.glyphs.empty()) {
      if (info.data.is_object()) data = with_field("model", [&] { return from_json<ShapesData>(info.data); });
      if (data.classes.empty() && data.glyphs.empty()) data.classes = info.class_names;
    }
    const shapes::Spec spec = data.spec(size);
    classes = shapes_class_names(spec);
    (void)class_labels(info, classes, "classes");
    auto batch = std::make_shared<shapes::Batch>(shapes::make_batch(spec, 2, 0, c.count));
    if (c.clean) {
      set_names.push_back("clean");
      sets.push_back([=] { return TestSet{"clean", batch->images, batch->images, batch->labels}; });
    }
    const auto corruptions = c.corruptions.empty() ? corruption_names() : c.corruptions;
    for (std::size_t i = 0; i < corruptions.size(); ++i) {
      const std::string name = corruptions[i];
      set_names.push_back(name);
      sets.push_back([=] {
        return TestSet{
            name, batch->images,
            corrupt_images(batch->images, name, static_cast<int>(c.severity), static_cast<std::uint64_t>(c.seed)),
            batch->labels};
      });
    }
  }
  const bool classify = project || wants("source");
  std::optional<ShapesClassifier> source;
  if (classify) {
    source = ShapesClassifier::load(c.classifier, classes, "classifier");
    source->net->to(device);
  }
  std::optional<ClipModel> clip;
  if (wants("zero_shot") || wants("tpt") || wants("difftpt")) {
    clip = with_field("clip", [&] { return load_clip(c.clip); });
    (*clip)->to(device);
    with_field("classes", [&] { (void)(*clip)->class_token_ids(classes); });
  }
  // DiffTPT's diffusion views: the test image re-noised and denoised by the model's null label, unguided.
  ProjectionSettings variation = c.projection;
  variation.start = c.tpt.diffusion_t;
  variation.steps = c.tpt.diffusion_steps;
  variation.guidance = c.tpt.diffusion_guidance;
  const DiffusionViews diffusion_views = [&](const torch::Tensor& image, std::int64_t count, Rng& rng) {
    return dda_project(model, info, image.unsqueeze(0).expand({count, -1, -1, -1}), variation, rng);
  };
  if (wants("difftpt") && variation.start >= info.num_train_timesteps)
    fail_field("diffusion_t", variation.start, " is not below the model's ", info.num_train_timesteps,
               " training timesteps");
  std::optional<ShapesClassifier> sda;
  if (wants("sda")) {
    if (c.sda_classifier.empty())
      fail_field("sda_classifier", "is required by the sda method (the classifier file a tta_sda run writes)");
    sda = ShapesClassifier::load(c.sda_classifier, classes, "sda_classifier");
    sda->net->to(device);
  }

  // Loop: every set not finished before; each finished set is recorded at once (sets.json + its grid rows).
  const auto done_path = ctx.path("sets.json");
  json done = json::object();
  if (std::filesystem::exists(done_path)) done = json::parse(read_file(done_path));
  std::filesystem::create_directories(ctx.path("sets"));
  for (std::size_t s = 0; s < sets.size(); ++s) {
    ctx.check_cancel();
    const std::string& name = set_names[s];
    if (done.contains(name)) continue;
    TestSet set = sets[s]();
    const auto n = set.images.size(0);
    json r = json::object();
    auto record = [&](const std::string& method, const torch::Tensor& scores, double seconds) {
      r[method] = {{"accuracy", accuracy(scores, set.labels)}, {"seconds_per_image", seconds}};
    };
    torch::Tensor p_source;
    double classify_seconds = 0;
    if (classify) {
      const auto t0 = Clock::now();
      p_source = torch::softmax(source->logits(set.images), 1);
      classify_seconds = seconds_since(t0) / static_cast<double>(n);
      if (wants("source")) record("source", p_source, classify_seconds);
    }
    if (clip) {
      Rng rng(static_cast<std::uint64_t>(c.seed) * 104729ull + s);
      // Each method timed on its own (the scores first: argument order is unspecified).
      auto timed = [&](const std::string& method, const std::function<torch::Tensor()>& run) {
        if (!wants(method)) return;
        const auto t0 = Clock::now();
        const auto scores = run();
        record(method, scores, seconds_since(t0) / static_cast<double>(n));
      };
      timed("zero_shot", [&] { return (*clip)->zero_shot_logits(set.images, classes, c.tpt.prompt_init + " {}"); });
      timed("tpt", [&] { return tpt_probs(*clip, classes, set.images, c.tpt, rng, {}, &ctx.cancel); });
      timed("difftpt", [&] { return tpt_probs(*clip, classes, set.images, c.tpt, rng, diffusion_views, &ctx.cancel); });
    }
    torch::Tensor projected;
    if (project) {
      Rng rng(static_cast<std::uint64_t>(c.seed) * 7919ull + s);
      const auto t1 = Clock::now();
      projected = dda_project(model, info, set.images, c.projection, rng, &ctx.cancel);
      const double project_seconds = seconds_since(t1) / static_cast<double>(n);
      const auto p_projected = torch::softmax(source->logits(projected), 1);
      if (wants("dda"))
        r["dda"] = {{"accuracy", accuracy(p_projected, set.labels)},
                    {"seconds_per_image", project_seconds + classify_seconds}};
      if (wants("dda_ensemble"))
        r["dda_ensemble"] = {{"accuracy", accuracy(p_source + p_projected, set.labels)},
                             {"seconds_per_image", project_seconds + 2 * classify_seconds}};
      if (sda) {
        const auto t2 = Clock::now();
        const auto p_tuned = torch::softmax(sda->logits(projected), 1);
        const double tuned_seconds = seconds_since(t2) / static_cast<double>(n);
        r["sda"] = {{"accuracy", accuracy(p_source + p_tuned, set.labels)},
                    {"seconds_per_image", project_seconds + classify_seconds + tuned_seconds}};
      }
    }
    r["images"] = n;
    const auto shown = std::min<std::int64_t>(c.grid_per_set, n);
    TensorMap rows = {{"images", set.images.narrow(0, 0, shown).contiguous()}};
    if (set.clean.defined()) rows["clean"] = set.clean.narrow(0, 0, shown).contiguous();
    if (projected.defined()) rows["projected"] = projected.narrow(0, 0, shown).contiguous();
    safetensors::save(ctx.path("sets/" + name + ".grid"), rows);
    done[name] = r;
    write_file_atomic(done_path, done.dump(2) + "\n");
    std::string line = name + ":";
    for (const auto& m : c.methods)
      if (r.contains(m)) line += " " + m + " " + percent(r[m]["accuracy"].get<double>()) + "%";
    ctx.report.info(line);
    ctx.report.progress("sets", static_cast<std::int64_t>(s) + 1, static_cast<std::int64_t>(sets.size()), {});
  }

  // Finish: the table (sets x methods, the mean over shifted sets), the grid, the metrics.
  json results = {{"classes", classes}, {"methods", c.methods}, {"severity", c.severity}, {"sets", json::object()}};
  std::map<std::string, double> sum, cost;
  int shifted = 0;
  for (const auto& name : set_names) {
    results["sets"][name] = done[name];
    if (name == "clean") continue;
    ++shifted;
    for (const auto& m : c.methods) {
      sum[m] += done[name][m]["accuracy"].get<double>();
      cost[m] += done[name][m]["seconds_per_image"].get<double>();
    }
  }
  std::string md = "| set |";
  std::string rule = "|---|";
  for (const auto& m : c.methods) md += " " + m + " |", rule += "---|";
  md += "\n" + rule + "\n";
  for (const auto& name : set_names) {
    md += "| " + name + " |";
    for (const auto& m : c.methods) md += " " + percent(done[name][m]["accuracy"].get<double>()) + " |";
    md += "\n";
  }
  std::map<std::string, double> scalars;
  if (shifted > 0) {
    json mean = json::object();
    md += "| **mean (shifted)** |";
    for (const auto& m : c.methods) {
      mean[m] = {{"accuracy", sum[m] / shifted}, {"seconds_per_image", cost[m] / shifted}};
      md += " **" + percent(sum[m] / shifted) + "** |";
      scalars["mean_accuracy_" + m] = sum[m] / shifted;
    }
    md += "\n| seconds / image |";
    for (const auto& m : c.methods) {
      char buf[32];
      std::snprintf(buf, sizeof buf, " %.3g |", cost[m] / shifted);
      md += buf;
    }
    md += "\n";
    results["mean"] = mean;
  }
  write_file_atomic(ctx.path("results.json"), results.dump(2) + "\n");
  write_file_atomic(ctx.path("results.md"), md);
  ctx.report.artifact("results", ctx.path("results.md"));

  std::vector<torch::Tensor> cells;
  GridOptions grid;
  grid.scale = 2;
  grid.title = "per set: " + std::string("original, shifted, projected");
  std::int64_t columns = 0;
  for (const auto& name : set_names) {
    auto f = safetensors::load(ctx.path("sets/" + name + ".grid"));
    std::vector<torch::Tensor> row;
    for (std::int64_t i = 0; i < f.tensors.at("images").size(0); ++i)
      for (const char* key : {"clean", "images", "projected"})
        if (f.tensors.count(key) != 0) row.push_back(f.tensors.at(key)[i]);
    if (row.empty()) continue;
    if (columns == 0) columns = static_cast<std::int64_t>(row.size());
    while (static_cast<std::int64_t>(row.size()) < columns) row.push_back(torch::full_like(row[0], 1.0));
    row.resize(static_cast<std::size_t>(columns));
    for (auto& r : row) cells.push_back(r);
    grid.row_labels.push_back(name);
  }
  if (!cells.empty()) {
    grid.columns = static_cast<int>(columns);
    save_png(ctx.path("grid.png"), make_grid(torch::stack(cells), grid));
    ctx.report.artifact("preview", ctx.path("grid.png"));
  }
  ctx.report.metrics(scalars);
}

}  // namespace atelier
