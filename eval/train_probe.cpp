#include "eval/train_probe.h"

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/image.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/shapes.h"
#include "eval/probe.h"

namespace atelier {
namespace {

// 70% Shapes classes, 30% concept glyphs, all styles; labels in the probe's label space.
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
    const auto label = b.labels[0].item<std::int64_t>();
    out.labels[i] = glyph ? probe_glyph_label(label) : probe_shape_label(label);
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

// Validation accuracy of labels and styles, clean and with noise of std 0.1.
std::map<std::string, double> validate(ProbeNet& net, const shapes::Batch& val) {
  auto clean = probe_accuracy(net, val.images, val.labels, val.styles);
  Rng noise_rng(7);
  auto noisy = probe_accuracy(net, val.images + 0.1 * noise_rng.randn(val.images.sizes()), val.labels, val.styles);
  return {{"val_label_acc", clean.label}, {"val_style_acc", clean.style}, {"val_label_acc_noise0.1", noisy.label}};
}

// 8 validation images labelled with the probe's predictions.
void save_preview(ProbeNet& net, const shapes::Batch& val, int size, const std::filesystem::path& path,
                  const json& config) {
  torch::NoGradGuard no_grad;
  net->eval();
  auto shown = val.images.slice(0, 0, 8);
  auto predicted = net->forward(shown).first.argmax(1);
  GridOptions grid;
  grid.columns = static_cast<int>(shown.size(0));
  grid.scale = std::max(1, 64 / size);
  grid.title = "probe predictions on validation images";
  for (std::int64_t k = 0; k < shown.size(0); ++k)
    grid.column_labels.push_back(probe_label_name(predicted[k].item<std::int64_t>()).substr(0, 5));
  save_png(path, make_grid(shown, grid), {{"atelier.config", json_text(config)}});
}

}  // namespace

void train_probe(const ProbeConfig& c, JobContext& ctx) {
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  ProbeNet net(ProbeOptions{static_cast<int>(c.width)});
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  const auto seed = static_cast<std::uint64_t>(c.seed);
  const int size = static_cast<int>(c.image_size);
  const shapes::Batch val = probe_batch(seed, 1, 0, c.val_samples, size);

  TrainLoop loop(ctx, c.schedule, {{{"model.", net.get()}}, &opt, &rng}, LrDecay::Cosine);
  loop.every(c.eval_every,
             [&](std::int64_t done) { ctx.report.progress("eval", done, c.schedule.steps, validate(net, val)); });
  loop.run([&](std::int64_t step) {
    // The global batch and its augmentation as one process draws them; this rank keeps its rows.
    auto batch = probe_batch(seed, 0, step * c.schedule.batch, c.schedule.batch, size);
    auto x = shard_rows(augment(batch.images, rng, c.noise_aug, c.blur_prob), ctx.shard);
    auto [logits, style_logits] = net->forward(x);
    return TrainStep{torch::cross_entropy_loss(logits, shard_rows(batch.labels, ctx.shard)) +
                     0.5 * torch::cross_entropy_loss(style_logits, shard_rows(batch.styles, ctx.shard))};
  });

  const auto metrics = validate(net, val);
  ctx.report.progress("eval", c.schedule.steps, c.schedule.steps, metrics);
  Metadata meta = {{"atelier.kind", "shapes_probe"},
                   {"probe.width", std::to_string(c.width)},
                   {"probe.image_size", std::to_string(c.image_size)},
                   {"atelier.config", json_text(to_json(c))}};
  safetensors::save(ctx.path(c.output), module_tensors(*net), meta);
  ctx.report.artifact("model", ctx.path(c.output));
  write_file_atomic(ctx.path("metrics.json"), json(metrics).dump(2) + "\n");
  ctx.report.metrics(metrics);
  save_preview(net, val, size, ctx.path("preview.png"), to_json(c));
  ctx.report.artifact("preview", ctx.path("preview.png"));
}

}  // namespace atelier
