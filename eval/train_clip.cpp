#include "eval/train_clip.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <set>

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/image.h"
#include "core/rng.h"
#include "data/shapes.h"

namespace atelier {
namespace {

// Uniform [0, 1) from (seed, index, salt) by splitmix64: the per-sample choices of the training data.
double unit(std::uint64_t seed, std::int64_t index, std::uint64_t salt) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(index) * 0xD1B54A32D192ED03ull +
                    salt * 0x94D049BB133111EBull + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<double>((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

// Words of captions and prompt templates that name no attribute of the image.
const std::set<std::string>& filler_words() {
  static const std::set<std::string> words = {"a",     "an", "the",   "of",         "photo", "picture", "image",
                                              "shape", "on", "style", "background", ",",     "."};
  return words;
}

// A short prompt from the words of a full caption "a <size> <colour> <what...> on a <bg> background, <style>
// style": a template around [size] [colour] <what>, sometimes followed by ", <style> style".
std::string short_prompt(const std::vector<std::string>& words, std::uint64_t seed, std::int64_t index) {
  static const char* kTemplates[] = {"a {}",
                                     "the {}",
                                     "a photo of a {}",
                                     "a photo of the {}",
                                     "a picture of a {}",
                                     "an image of a {}",
                                     "an image of the {}",
                                     "a {} shape"};
  const auto on = std::find(words.begin(), words.end(), "on");
  std::string desc;
  if (unit(seed, index, 4) < 0.3) desc += words[1] + " ";
  if (unit(seed, index, 5) < 0.5) desc += words[2] + " ";
  for (auto w = words.begin() + 3; w != on; ++w) desc += *w + (w + 1 == on ? "" : " ");
  std::string t = kTemplates[static_cast<int>(unit(seed, index, 6) * 8)];
  std::string prompt = t.replace(t.find("{}"), 2, desc);
  if (unit(seed, index, 7) < 0.25) prompt += ", " + words[words.size() - 2] + " style";
  return prompt;
}

struct ClipBatch {
  torch::Tensor images;               // [B, 3, S, S] in [-1, 1]
  std::vector<std::string> captions;  // the text paired with each image
  std::vector<std::string> full;      // each image's full caption
};

// Samples first .. first + count - 1 of a split: shapes or glyphs, upright or rotated, every style,
// colour, size and background. With `prompts`, a fraction of the captions are short prompts.
ClipBatch clip_batch(const ClipTrainConfig& c, const ClipTokenizer& tokenizer, int split, std::int64_t first,
                     std::int64_t count, bool prompts) {
  const auto seed = static_cast<std::uint64_t>(c.seed);
  const int size = static_cast<int>(c.model.image_size);
  shapes::Spec spec;
  spec.size = size;
  spec.seed = seed;
  spec.styles = {0, 1, 2, 3, 4};
  spec.min_scale = 0.4f;  // small / medium / large captions in equal parts
  spec.max_scale = 0.85f;
  ClipBatch b{torch::empty({count, 3, size, size}), std::vector<std::string>(static_cast<std::size_t>(count)),
              std::vector<std::string>(static_cast<std::size_t>(count))};
  at::parallel_for(0, count, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const std::int64_t index = first + i;
      shapes::Spec s = spec;
      if (unit(seed, index, 1) < c.glyph_fraction) s.glyphs = {0, 1, 2, 3, 4};
      s.rotation = unit(seed, index, 2) < c.rotated_fraction ? 360.0f : 0.0f;
      const shapes::Attributes a = shapes::sample_attributes(s, split, index);
      b.images[i].copy_(image_to_tensor(shapes::render(a, size)));
      const auto k = static_cast<std::size_t>(i);
      b.full[k] = a.caption();
      const bool prompt = prompts && unit(seed, index, 3) < c.prompt_fraction;
      b.captions[k] = prompt ? short_prompt(tokenizer.words(b.full[k]), seed, index) : b.full[k];
    }
  });
  return b;
}

// [B, B] float: 1 where caption j names only attributes of image i (all its non-filler words are words
// of image i's full caption).
torch::Tensor caption_matches(const ClipBatch& b, const ClipTokenizer& tokenizer) {
  const auto n = static_cast<std::int64_t>(b.captions.size());
  std::vector<std::set<std::string>> truth, named;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto full = tokenizer.words(b.full[static_cast<std::size_t>(i)]);
    truth.emplace_back(full.begin(), full.end());
    named.emplace_back();
    for (const auto& w : tokenizer.words(b.captions[static_cast<std::size_t>(i)]))
      if (!filler_words().count(w)) named.back().insert(w);
  }
  auto out = torch::zeros({n, n});
  auto a = out.accessor<float, 2>();
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      const auto& t = truth[static_cast<std::size_t>(i)];
      const auto& w = named[static_cast<std::size_t>(j)];
      a[i][j] = std::includes(t.begin(), t.end(), w.begin(), w.end()) ? 1.0f : 0.0f;
    }
  return out;
}

// Symmetric InfoNCE with multi-positive targets: cross-entropy of each row of `logits` [B, B] (image i
// vs caption j) against `matches` normalised per row, and the same for captions against images.
torch::Tensor clip_loss(const torch::Tensor& logits, const torch::Tensor& matches) {
  auto soft_ce = [](const torch::Tensor& l, const torch::Tensor& m) {
    return -(m / m.sum(1, true) * torch::log_softmax(l, 1)).sum(1).mean();
  };
  return 0.5 * (soft_ce(logits, matches) + soft_ce(logits.t(), matches.t()));
}

struct ValSets {
  torch::Tensor zero_shot_images, zero_shot_labels;
  std::vector<std::string> class_names;  // prompt names: a glyph is "<name> glyph"
  ClipBatch retrieval;
};

ValSets val_sets(const ClipTrainConfig& c, const ClipTokenizer& tokenizer) {
  ValSets v;
  const shapes::Spec spec = c.zero_shot.spec(static_cast<int>(c.model.image_size));
  const auto batch = shapes::make_batch(spec, 2, 0, c.zero_shot_samples);
  v.zero_shot_images = batch.images;
  v.zero_shot_labels = batch.labels;
  for (auto name : shapes_class_names(spec)) v.class_names.push_back(spec.glyphs.empty() ? name : name + " glyph");
  v.retrieval = clip_batch(c, tokenizer, 1, 0, c.val_samples, false);
  return v;
}

// Zero-shot accuracy (two prompt templates), caption retrieval accuracy both ways, logit scale.
std::map<std::string, double> validate(ClipModel& net, const ValSets& v) {
  torch::NoGradGuard no_grad;
  std::map<std::string, double> m;
  m["zero_shot_acc"] = zero_shot_accuracy(net, v.zero_shot_images, v.zero_shot_labels, v.class_names);
  m["zero_shot_acc_a"] = zero_shot_accuracy(net, v.zero_shot_images, v.zero_shot_labels, v.class_names, "a {}");
  const auto& r = v.retrieval;
  auto sim = net->encode_image(r.images).mm(net->encode_text(net->tokenizer().tokenize(r.full)).t());  // [B, B]
  auto caption_of_image = sim.argmax(1), image_of_caption = sim.argmax(0);
  const auto n = static_cast<std::int64_t>(r.full.size());
  double i2t = 0, t2i = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& own = r.full[static_cast<std::size_t>(i)];
    i2t += r.full[static_cast<std::size_t>(caption_of_image[i].item<std::int64_t>())] == own;
    t2i += r.full[static_cast<std::size_t>(image_of_caption[i].item<std::int64_t>())] == own;
  }
  m["retrieval_image_to_caption"] = i2t / static_cast<double>(n);
  m["retrieval_caption_to_image"] = t2i / static_cast<double>(n);
  m["logit_scale"] = net->logit_scale_exp().item<double>();
  return m;
}

// 8 zero-shot validation images labelled with the model's predictions.
void save_preview(ClipModel& net, const ValSets& v, const std::filesystem::path& path, const json& config) {
  auto shown = v.zero_shot_images.slice(0, 0, 8);
  auto predicted = net->zero_shot_logits(shown, v.class_names).argmax(1);
  GridOptions grid;
  grid.columns = static_cast<int>(shown.size(0));
  grid.scale = std::max(1, 64 / static_cast<int>(shown.size(2)));
  grid.title = "CLIP zero-shot: a photo of a {}";
  for (std::int64_t k = 0; k < shown.size(0); ++k)
    grid.column_labels.push_back(
        v.class_names[static_cast<std::size_t>(predicted[k].item<std::int64_t>())].substr(0, 6));
  save_png(path, make_grid(shown, grid), {{"atelier.config", json_text(config)}});
}

// AdamW as CLIP: betas (0.9, 0.98), eps 1e-6, weight decay on matrices only (group 0).
torch::optim::AdamW make_optimizer(ClipModel& net, double lr, double weight_decay) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : net->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(lr).betas({0.9, 0.98}).eps(1e-6).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  return torch::optim::AdamW(std::move(groups), *options(weight_decay));
}

}  // namespace

void train_clip(const ClipTrainConfig& c, JobContext& ctx) {
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  ClipModel net(c.model);
  auto opt = make_optimizer(net, c.lr, c.weight_decay);
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  const ValSets val = val_sets(c, net->tokenizer());

  TrainLoop loop(ctx, c.schedule, {{{"model.", net.get()}}, &opt, &rng}, LrDecay::Cosine);
  loop.every(c.eval_every,
             [&](std::int64_t done) { ctx.report.progress("eval", done, c.schedule.steps, validate(net, val)); });
  loop.run([&](std::int64_t step) {
    const auto batch = clip_batch(c, net->tokenizer(), 0, step * c.schedule.batch, c.schedule.batch, true);
    const auto n = batch.images.size(0);
    const auto sigma = rng.rand({n, 1, 1, 1}) * c.noise_aug;  // drawn before the noise, in this order
    auto x = batch.images + sigma * rng.randn(batch.images.sizes());
    // Data-parallel: each rank encodes its rows; the contrastive loss is over the gathered global batch.
    const auto first = batch.captions.begin() + ctx.shard.first(n);
    const std::vector<std::string> captions(first, first + ctx.shard.size(n));
    auto images = gather_batch(ctx.parallel, net->encode_image(shard_rows(x, ctx.shard)));
    auto texts = gather_batch(ctx.parallel, net->encode_text(net->tokenizer().tokenize(captions)));
    auto logits = net->logit_scale_exp() * images.mm(texts.t());
    return TrainStep{clip_loss(logits, caption_matches(batch, net->tokenizer())),
                     {{"logit_scale", net->logit_scale_exp().detach()}}};
  });

  const auto metrics = validate(net, val);
  ctx.report.progress("eval", c.schedule.steps, c.schedule.steps, metrics);
  save_clip(ctx.path(c.output), net, {{"atelier.config", json_text(to_json(c))}});
  ctx.report.artifact("model", ctx.path(c.output));
  write_file_atomic(ctx.path("metrics.json"), json(metrics).dump(2) + "\n");
  ctx.report.metrics(metrics);
  save_preview(net, val, ctx.path("preview.png"), to_json(c));
  ctx.report.artifact("preview", ctx.path("preview.png"));
}

}  // namespace atelier
