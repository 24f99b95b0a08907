#include "core/probe.h"

#include <cmath>

#include "core/atomic_file.h"
#include "core/image.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/shapes.h"
#include "core/training_state.h"

namespace atelier {
namespace {

// Appends conv-norm-SiLU x2 (+ 2x2 average pool) to `s`.
void add_stage(torch::nn::Sequential& s, int in, int out, bool pool) {
  s->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)));
  s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::min(8, out / 2), out)));
  s->push_back(torch::nn::SiLU());
  s->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)));
  s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::min(8, out / 2), out)));
  s->push_back(torch::nn::SiLU());
  if (pool) s->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2)));
}

// 70% Shapes classes, 30% concept glyphs, all styles; labels in the probe's 13-way space.
shapes::Batch probe_batch(std::uint64_t seed, int split, std::int64_t first, std::int64_t count, int size) {
  shapes::Spec base, glyphs;
  base.size = glyphs.size = size;
  base.seed = glyphs.seed = seed;
  base.styles = glyphs.styles = {0, 1, 2, 3, 4};
  base.min_scale = glyphs.min_scale = 0.45f;
  glyphs.glyphs = {0, 1, 2, 3, 4};
  shapes::Batch out;
  out.images = torch::empty({count, 3, size, size});
  out.labels = torch::empty({count}, torch::kLong);
  out.styles = torch::empty({count}, torch::kLong);
  for (std::int64_t i = 0; i < count; ++i) {
    std::int64_t index = first + i;
    bool glyph = index % 10 < 3;
    auto b = shapes::make_batch(glyph ? glyphs : base, split, index, 1);
    out.images[i].copy_(b.images[0]);
    out.labels[i] = b.labels[0].item<std::int64_t>() + (glyph ? 8 : 0);
    out.styles[i] = b.styles[0];
  }
  return out;
}

torch::Tensor augment(const torch::Tensor& x, Rng& rng, double noise, double blur_prob) {
  auto n = x.size(0);
  auto sigma = rng.rand({n, 1, 1, 1}) * noise;
  auto blurred = torch::avg_pool2d(
      torch::nn::functional::pad(x, torch::nn::functional::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReplicate)), 3, 1);
  auto use_blur = (rng.rand({n, 1, 1, 1}) < blur_prob).to(x.dtype());
  auto y = x * (1 - use_blur) + blurred * use_blur;
  return y + sigma * rng.randn(x.sizes());
}

}  // namespace

int probe_num_labels() {
  return 13;
}

std::string probe_label_name(int label) {
  return label < 8 ? shapes::shape_names().at(label) : shapes::glyph_names().at(label - 8);
}

ProbeNetImpl::ProbeNetImpl(ProbeOptions options) : options_(options) {
  const int w = options.width;
  torch::nn::Sequential features;
  add_stage(features, 3, w, true);
  add_stage(features, w, 2 * w, true);
  add_stage(features, 2 * w, 4 * w, false);
  features_ = register_module("features", features);
  label_head_ = register_module("label_head", torch::nn::Linear(4 * w, probe_num_labels()));
  style_head_ = register_module("style_head", torch::nn::Linear(4 * w, static_cast<int>(shapes::style_names().size())));
}

torch::Tensor ProbeNetImpl::resized(const torch::Tensor& x) const {
  const std::int64_t s = options_.image_size;
  if (s <= 0 || (x.size(2) == s && x.size(3) == s)) return x;
  namespace F = torch::nn::functional;
  auto o = F::InterpolateFuncOptions().size(std::vector<std::int64_t>{s, s});
  if (x.size(2) >= s && x.size(3) >= s) return F::interpolate(x, o.mode(torch::kArea));
  return F::interpolate(x, o.mode(torch::kBilinear).align_corners(false));
}

torch::Tensor ProbeNetImpl::features(const torch::Tensor& x) {
  return features_->forward(resized(x)).mean({2, 3});  // [N, 4w]
}

std::pair<torch::Tensor, torch::Tensor> ProbeNetImpl::forward(const torch::Tensor& x) {
  auto f = features(x);
  return {label_head_->forward(f), style_head_->forward(f)};
}

ProbeAccuracy probe_accuracy(ProbeNet& net, const torch::Tensor& images, const torch::Tensor& labels,
                             const torch::Tensor& styles) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::int64_t correct_label = 0, correct_style = 0, n = images.size(0);
  for (std::int64_t i = 0; i < n; i += 256) {
    auto x = images.slice(0, i, std::min(n, i + 256));
    auto [l, s] = net->forward(x);
    correct_label += l.argmax(1).eq(labels.slice(0, i, i + x.size(0))).sum().item<std::int64_t>();
    if (styles.defined()) correct_style += s.argmax(1).eq(styles.slice(0, i, i + x.size(0))).sum().item<std::int64_t>();
  }
  net->train();
  return {static_cast<double>(correct_label) / n, static_cast<double>(correct_style) / n};
}

ProbeNet load_probe(const std::filesystem::path& path) {
  TensorFile f = safetensors::load(path);
  auto it = f.metadata.find("probe.width");
  if (it == f.metadata.end()) fail(path.string(), ": not a Shapes probe (no probe.width metadata)");
  ProbeOptions options{std::stoi(it->second)};
  if (auto size = f.metadata.find("probe.image_size"); size != f.metadata.end())
    options.image_size = std::stoi(size->second);
  ProbeNet net(options);
  load_module_tensors(*net, f.tensors, "", path.string());
  net->eval();
  return net;
}

void train_probe(const ProbeConfig& c, JobContext& ctx) {
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  ProbeNet net(ProbeOptions{static_cast<int>(c.width)});
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  const auto seed = static_cast<std::uint64_t>(c.seed);
  const int size = static_cast<int>(c.image_size);

  const TrainingParts parts{{{"model.", net.get()}}, &opt, &rng};
  const std::int64_t start = ctx.resume ? restore_training_parts(ctx.run_dir, parts) : 0;
  if (start > 0) ctx.report.info("resumed from step " + std::to_string(start));
  auto checkpoint = [&](std::int64_t step) {
    ctx.report.artifact("checkpoint", save_training_parts(ctx.run_dir, step, parts));
  };
  shapes::Batch val = probe_batch(seed, 1, 0, c.val_samples, size);
  auto evaluate = [&](std::int64_t step) {
    auto clean = probe_accuracy(net, val.images, val.labels, val.styles);
    Rng noise_rng(7);
    auto noisy = probe_accuracy(net, val.images + 0.1 * noise_rng.randn(val.images.sizes()), val.labels, val.styles);
    std::map<std::string, double> m = {
        {"val_label_acc", clean.label}, {"val_style_acc", clean.style}, {"val_label_acc_noise0.1", noisy.label}};
    ctx.report.progress("eval", step, c.steps, m);
    return m;
  };

  const std::int64_t warmup = std::max<std::int64_t>(1, c.steps / 20);
  for (std::int64_t step = start; step < c.steps; ++step) {
    if (ctx.cancel.requested()) {
      checkpoint(step);
      throw Cancelled();
    }
    double lr = step < warmup
                    ? c.lr * (step + 1) / warmup
                    : 0.5 * c.lr * (1 + std::cos(M_PI * (step - warmup) / std::max<std::int64_t>(1, c.steps - warmup)));
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    auto batch = probe_batch(seed, 0, step * c.batch, c.batch, size);
    auto x = augment(batch.images, rng, c.noise_aug, c.blur_prob);
    auto [logits, style_logits] = net->forward(x);
    auto loss =
        torch::cross_entropy_loss(logits, batch.labels) + 0.5 * torch::cross_entropy_loss(style_logits, batch.styles);
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(net->parameters(), 1.0);
    opt.step();
    ctx.report.progress("train", step + 1, c.steps, {{"loss", loss.item<double>()}, {"lr", lr}});
    if ((step + 1) % c.checkpoint_every == 0 && step + 1 < c.steps) checkpoint(step + 1);
    if ((step + 1) % c.eval_every == 0 && step + 1 < c.steps) evaluate(step + 1);
  }

  auto metrics = evaluate(c.steps);
  Metadata meta = {{"atelier.kind", "shapes_probe"},
                   {"probe.width", std::to_string(c.width)},
                   {"probe.image_size", std::to_string(c.image_size)},
                   {"atelier.config", to_json(c).dump()}};
  safetensors::save(ctx.path(c.output), module_tensors(*net), meta);
  ctx.report.artifact("model", ctx.path(c.output));
  write_file_atomic(ctx.path("metrics.json"), json(metrics).dump(2) + "\n");
  ctx.report.metrics(metrics);

  // Preview: 32 validation images labelled with the probe's predictions.
  torch::NoGradGuard no_grad;
  net->eval();
  auto shown = val.images.slice(0, 0, 8);
  auto predicted = net->forward(shown).first.argmax(1);
  GridOptions grid;
  grid.columns = 8;
  grid.scale = std::max(1, 64 / size);
  grid.title = "probe predictions on validation images";
  for (int k = 0; k < 8; ++k)
    grid.column_labels.push_back(probe_label_name(static_cast<int>(predicted[k].item<std::int64_t>())).substr(0, 5));
  save_png(ctx.path("preview.png"), make_grid(shown, grid), {{"atelier.config", to_json(c).dump()}});
  ctx.report.artifact("preview", ctx.path("preview.png"));
}

}  // namespace atelier
