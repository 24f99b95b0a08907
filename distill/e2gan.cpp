#include "distill/e2gan.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "adapters/adapter_file.h"
#include "adapters/finetune.h"
#include "adapters/lora.h"
#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/image.h"
#include "core/runtime.h"
#include "core/safetensors.h"
#include "data/edit_pairs.h"
#include "data/folder_dataset.h"
#include "eval/labels.h"
#include "eval/metrics.h"

namespace atelier {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string stem_of(const std::string& path) {
  return std::filesystem::path(path).stem().string();
}

// ---- e2gan_data ---------------------------------------------------------------------------------------

// The inputs of one set and, for Shapes inputs, their ground-truth restyles.
struct Inputs {
  torch::Tensor images, labels, truth;  // labels in the teacher's class space
};

Inputs shapes_inputs(const shapes::Spec& spec, int split, std::int64_t count, int truth_style,
                     const std::vector<std::int64_t>& to_teacher) {
  Inputs in;
  if (count == 0) return in;
  auto b = shapes::make_batch(spec, split, 0, count);
  in.images = b.images;
  in.labels = torch::tensor(to_teacher).index_select(0, b.labels);
  if (truth_style >= 0) in.truth = shapes::make_batch(spec, split, 0, count, truth_style).images;
  return in;
}

Inputs folder_inputs(const FolderDataset& folder, std::int64_t count, int size,
                     const std::vector<std::int64_t>& to_teacher) {
  Inputs in;
  const auto n = std::min<std::int64_t>(count, static_cast<std::int64_t>(folder.size()));
  std::vector<std::size_t> idx(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  if (n == 0) return in;
  auto [images, labels] = folder.batch(idx, size);
  in.images = images;
  in.labels = torch::tensor(to_teacher).index_select(0, labels);
  return in;
}

// SDEdit of `images` in batches, conditioned on `labels`; returns the edits on the CPU.
torch::Tensor teacher_edit(DiT& model, const DiTModelInfo& info, const Inputs& in, const E2GanDataConfig& c, Rng& rng,
                           JobContext& ctx, const std::string& phase) {
  const auto n = in.images.size(0);
  const auto device = model->pos_embed.device();
  std::vector<torch::Tensor> out;
  ImageInit init;
  init.strength = c.strength;
  for (std::int64_t first = 0; first < n; first += c.batch) {
    const auto len = std::min(c.batch, n - first);
    init.images = in.images.narrow(0, first, len).to(device);
    auto edited = generate(model, info, in.labels.narrow(0, first, len).to(device), c.sampler, rng,
                           cancel_observer(&ctx.cancel), &init);
    out.push_back(checked_finite(edited, "teacher").clamp(-1, 1).cpu());
    ctx.report.progress(phase, first + len, n);
  }
  return torch::cat(out);
}

// Grid of up to 8 pairs: input, teacher, (truth) rows.
void save_pairs_grid(const PairSet& set, const std::string& title, const std::filesystem::path& path) {
  const auto k = std::min<std::int64_t>(8, set.size());
  std::vector<torch::Tensor> rows = {set.input.narrow(0, 0, k), set.teacher.narrow(0, 0, k)};
  std::vector<std::string> labels = {"input", "teacher"};
  if (set.truth.defined()) rows.push_back(set.truth.narrow(0, 0, k)), labels.push_back("truth");
  GridOptions g;
  g.columns = static_cast<int>(k);
  g.scale = set.input.size(2) < 64 ? 2 : 1;
  g.row_labels = labels;
  g.title = title;
  save_png(path, make_grid(torch::cat(rows), g));
}

}  // namespace

void e2gan_data_job(const E2GanDataConfig& c, JobContext& ctx) {
  // Config -> build: the teacher with the edit's adapter, the inputs, the ground-truth style.
  if (c.adapter.empty())
    fail_field("adapter", "is required: the edit's adapter of the teacher (e.g. a difffit run's adapter.safetensors)");
  const torch::Device device = select_device(c.device);
  DiTModelInfo info;
  DiT model = load_adapted_model(c.teacher, {c.adapter}, {}, &info);
  model->to(device);
  // The Shapes style the adapter was trained on (its job's "styles", when it names exactly one).
  std::string adapter_style;
  if (is_adapter_file(c.adapter)) {
    const json config = load_adapter(c.adapter).info.config;
    for (const json* d : {&config, config.contains("data") ? &config["data"] : nullptr})
      if (d != nullptr && d->is_object() && d->contains("styles") && (*d)["styles"].is_array() &&
          (*d)["styles"].size() == 1 && (*d)["styles"][0].is_string())
        adapter_style = (*d)["styles"][0].get<std::string>();
  }
  const std::string edit = !c.edit.empty() ? c.edit : !adapter_style.empty() ? adapter_style : stem_of(c.adapter);
  const std::int64_t size = model->config().input_size;
  if (model->config().in_channels != 3) fail_field("teacher", "is a latent model; e2gan_data needs a pixel-space DiT");

  Inputs train, val;
  std::vector<std::string> classes;
  std::string truth_style;
  if (!c.images.empty()) {
    const auto folder = with_field("images", [&] { return FolderDataset::scan(c.images); });
    classes = folder.classes();
    const auto to_teacher = class_labels(info, classes, "images");
    train = folder_inputs(folder, c.count, static_cast<int>(size), to_teacher);
    ctx.report.info("inputs: " + std::to_string(train.images.size(0)) + " images of " + c.images +
                    " (no ground truth, no held-out set)");
  } else {
    ShapesData data = c.data;
    if (data.classes.empty() && data.glyphs.empty()) data.classes = info.class_names;
    const shapes::Spec spec = data.spec(static_cast<int>(size));
    classes = shapes_class_names(spec);
    const auto to_teacher = class_labels(info, classes, "classes");
    truth_style = !c.style.empty() ? c.style : adapter_style;
    const int style = truth_style.empty() ? -1 : with_field("style", [&] {
      return shapes::index_of(shapes::style_names(), truth_style, "style");
    });
    train = shapes_inputs(spec, 0, c.count, style, to_teacher);
    val = shapes_inputs(spec, 2, c.val_count, style, to_teacher);
    ctx.report.info("inputs: " + std::to_string(c.count) + " Shapes training scenes, " + std::to_string(c.val_count) +
                    " held-out" +
                    (truth_style.empty() ? std::string() : ", ground truth rendered '" + truth_style + "'"));
  }

  // Edit: the teacher on every input (training inputs first, so a seed fixes both sets).
  Rng rng(static_cast<std::uint64_t>(c.seed));
  const auto t0 = Clock::now();
  EditPairs pairs;
  pairs.train = {train.images, teacher_edit(model, info, train, c, rng, ctx, "edit train"), train.truth, train.labels};
  const double seconds = seconds_since(t0);
  if (val.images.defined())
    pairs.val = {val.images, teacher_edit(model, info, val, c, rng, ctx, "edit val"), val.truth, val.labels};
  const double per_image = seconds / static_cast<double>(std::max<std::int64_t>(1, train.images.size(0)));

  // Representative subset: the training pair nearest each k-means centre of the teacher's edits.
  std::optional<ProbeNet> probe;
  if (!c.probe.empty()) probe = with_field("probe", [&] { return load_probe(c.probe); });
  if (c.select > 0 && c.select < pairs.train.size()) {
    if (!probe) fail_field("select", "needs a probe (its features are what k-means clusters)");
    Rng pick(static_cast<std::uint64_t>(c.seed) + 7);
    const auto keep = kmeans_representatives(probe_features(*probe, pairs.train.teacher), c.select, pick);
    pairs.train = pairs.train.subset(torch::tensor(keep));
    ctx.report.info("selected " + std::to_string(keep.size()) + " representative pairs of " + std::to_string(c.count) +
                    " (k-means on probe features)");
  }

  // Finish: the pairs file, a grid, and the teacher's fidelity to the ground truth.
  pairs.edit = edit;
  pairs.classes = classes;
  pairs.info = {{"teacher", c.teacher},     {"adapter", c.adapter},
                {"strength", c.strength},   {"sampler", c.sampler.sampler},
                {"steps", c.sampler.steps}, {"cfg_scale", c.sampler.cfg_scale},
                {"style", truth_style},     {"teacher_seconds_per_image", per_image}};
  save_edit_pairs(ctx.path(c.output), pairs);
  ctx.report.artifact("pairs", ctx.path(c.output));
  const PairSet& shown = pairs.val.size() > 0 ? pairs.val : pairs.train;
  save_pairs_grid(shown, "edit '" + edit + "': input, teacher" + (shown.truth.defined() ? ", truth" : ""),
                  ctx.path("pairs.png"));
  ctx.report.artifact("pairs.png", ctx.path("pairs.png"));
  json m = {{"edit", edit},
            {"train_pairs", pairs.train.size()},
            {"val_pairs", pairs.val.size()},
            {"teacher_seconds_per_image", per_image},
            {"device", device.str()}};
  std::map<std::string, double> scalars = {{"teacher_seconds_per_image", per_image}};
  if (shown.truth.defined()) {
    const double l1 = (shown.teacher - shown.truth).abs().mean().item<double>();
    const double p = psnr(shown.teacher, shown.truth);
    m["teacher_vs_truth"] = {{"l1", l1}, {"psnr", p}};
    scalars["teacher_l1_to_truth"] = l1;
    scalars["teacher_psnr_to_truth"] = p;
    if (probe) {
      const double fd = fd_shapes(*probe, shown.teacher, shown.truth);
      m["teacher_vs_truth"]["fd_shapes"] = fd;
      scalars["teacher_fd_to_truth"] = fd;
    }
  }
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  ctx.report.metrics(scalars);
}

// ---- training -----------------------------------------------------------------------------------------

namespace {

// "t0", "t1", ... (a stream: GCC 12 misreads the bounds of "t" + std::to_string(k) as an overflow).
std::string indexed_name(const char* prefix, std::size_t k) {
  std::ostringstream name;
  name << prefix << k;
  return name.str();
}

// Held-out fidelity of a generator's edit: L1 and PSNR to the teacher (what it learns) and to the
// ground truth, FD-shapes to the teacher's edits.
struct Fidelity {
  double l1 = 0, psnr = 0, l1_truth = -1, psnr_truth = -1, fd = -1;
  json to_json() const {
    json j = {{"l1", l1}, {"psnr", psnr}};
    if (l1_truth >= 0) j["l1_truth"] = l1_truth, j["psnr_truth"] = psnr_truth;
    if (fd >= 0) j["fd_shapes"] = fd;
    return j;
  }
};

// Which edit a generator applies: a row of its edit table, or tokens given directly (a new edit being
// learned apart from the table, so the base's rows stay untouched).
struct EditRef {
  std::int64_t row = 0;
  torch::Tensor tokens;
  torch::Tensor apply(E2GanGenerator& g, const torch::Tensor& x) const {
    if (tokens.defined()) return g->forward_tokens(x, tokens);
    return g->forward(x, torch::full({x.size(0)}, row, torch::kLong));
  }
};

torch::Tensor run_generator(E2GanGenerator& g, const torch::Tensor& input, const EditRef& edit) {
  torch::NoGradGuard no_grad;
  const bool was_training = g->is_training();
  g->eval();
  const auto device = g->edits.device();
  std::vector<torch::Tensor> out;
  for (std::int64_t first = 0; first < input.size(0); first += 64) {
    auto x = input.narrow(0, first, std::min<std::int64_t>(64, input.size(0) - first)).to(device);
    out.push_back(edit.apply(g, x).cpu());
  }
  g->train(was_training);
  return torch::cat(out);
}

Fidelity fidelity(E2GanGenerator& g, const EditRef& edit, const PairSet& val, ProbeNet* probe) {
  Fidelity f;
  auto out = run_generator(g, val.input, edit);
  f.l1 = (out - val.teacher).abs().mean().item<double>();
  f.psnr = psnr(out, val.teacher);
  if (val.truth.defined()) {
    f.l1_truth = (out - val.truth).abs().mean().item<double>();
    f.psnr_truth = psnr(out, val.truth);
  }
  if (probe != nullptr && val.size() >= 8) f.fd = fd_shapes(*probe, out, val.teacher);
  return f;
}

// The held-out set of a pairs file, or (when it has none) its last 10% of training pairs, taken out.
PairSet held_out(EditPairs& pairs, const std::string& source) {
  if (pairs.val.size() > 0) return pairs.val;
  const auto n = pairs.train.size();
  const auto k = std::max<std::int64_t>(1, n / 10);
  if (n < 2) fail(source, ": ", n, " pair(s): too few to hold any out for evaluation");
  PairSet val = pairs.train.subset(torch::arange(n - k, n));
  pairs.train = pairs.train.subset(torch::arange(0, n - k));
  return val;
}

// One GAN training run over edits: batches drawn uniformly over (edit, pair); L1 to the teacher plus
// LSGAN against the conditional PatchGAN, both networks in one backward pass (the discriminator sees
// detached fakes; the generator's adversarial term sees a frozen discriminator). In a data-parallel run
// the global batch is drawn on every rank and each rank trains on `shard`'s rows of it.
class GanTraining {
 public:
  // sets[e] is learned as edits[e].
  GanTraining(E2GanGenerator& g, const std::vector<PairSet>& sets, const std::vector<EditRef>& edits,
              const GanLossSettings& loss, std::uint64_t seed, const torch::Device& device, const Shard& shard = {})
      : g_(g),
        sets_(sets),
        edits_(edits),
        loss_(loss),
        d_(PatchDiscriminatorConfig{loss.disc_width}),
        rng_(seed),
        shard_(shard) {
    d_->to(device);
  }
  PatchDiscriminator& discriminator() { return d_; }
  Rng& rng() { return rng_; }

  // Adam over the generator's trained tensors (group 0) and the discriminator (group 1).
  std::unique_ptr<torch::optim::Adam> optimizer(const std::vector<torch::Tensor>& trained) {
    auto options = [&](double lr) {
      return std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(lr).betas({loss_.beta1, 0.999}));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(trained, options(loss_.lr));
    groups.emplace_back(d_->parameters(), options(loss_.lr_d));
    return std::make_unique<torch::optim::Adam>(std::move(groups), *options(loss_.lr));
  }

  TrainStep step(std::int64_t batch) {
    const auto device = g_->edits.device();
    auto which = rng_.randint(static_cast<std::int64_t>(sets_.size()), {batch});
    // The global batch in edit order; this rank keeps rows [first, first + size) of it.
    const std::int64_t first = shard_.first(batch), last = first + shard_.size(batch);
    std::int64_t offset = 0;
    std::vector<torch::Tensor> inputs, targets, fakes;
    for (std::size_t e = 0; e < sets_.size(); ++e) {
      const auto& set = sets_[e];
      const auto n = (which == static_cast<std::int64_t>(e)).sum().item<std::int64_t>();
      if (n == 0) continue;
      auto k = rng_.randint(set.size(), {n});
      const std::int64_t lo = std::max(offset, first), hi = std::min(offset + n, last);
      offset += n;
      if (lo >= hi) continue;
      k = k.narrow(0, lo - (offset - n), hi - lo);
      auto x = set.input.index_select(0, k).to(device);
      inputs.push_back(x);
      targets.push_back(set.teacher.index_select(0, k).to(device));
      fakes.push_back(edits_[e].apply(g_, x));
    }
    auto x = torch::cat(inputs), y = torch::cat(targets), fake = torch::cat(fakes);
    auto d_loss = lsgan_d_loss(d_(x, y), d_(x, fake.detach()));
    auto l1 = (fake - y).abs().mean();
    auto g_adv = lsgan_g_loss(d_->forward(x, fake, /*frozen=*/true));
    auto loss = loss_.l1_weight * l1 + loss_.adv_weight * g_adv + d_loss;
    return TrainStep{loss, {{"l1", l1.detach()}, {"g_adv", g_adv.detach()}, {"d", d_loss.detach()}}};
  }

 private:
  E2GanGenerator& g_;
  const std::vector<PairSet>& sets_;
  std::vector<EditRef> edits_;
  GanLossSettings loss_;
  PatchDiscriminator d_;
  Rng rng_;
  Shard shard_;
};

// A grid of held-out edits: input, teacher, generator rows for each edit.
void save_edit_grid(E2GanGenerator& g, const std::vector<PairSet>& vals, const std::vector<EditRef>& rows,
                    const std::vector<std::string>& names, const std::string& title,
                    const std::filesystem::path& path) {
  std::vector<torch::Tensor> images;
  std::vector<std::string> labels;
  const std::int64_t k = 8;
  for (std::size_t e = 0; e < vals.size(); ++e) {
    const auto n = std::min<std::int64_t>(k, vals[e].size());
    auto pad = [&](const torch::Tensor& t) {
      return n < k ? torch::cat({t, torch::zeros({k - n, t.size(1), t.size(2), t.size(3)})}) : t;
    };
    auto in = vals[e].input.narrow(0, 0, n);
    images.push_back(pad(in));
    images.push_back(pad(vals[e].teacher.narrow(0, 0, n)));
    images.push_back(pad(run_generator(g, in, rows[e])));
    labels.insert(labels.end(), {names[e] + " in", "teacher", "GAN"});
  }
  GridOptions opt;
  opt.columns = static_cast<int>(k);
  opt.scale = vals[0].input.size(2) < 64 ? 2 : 1;
  opt.row_labels = labels;
  opt.title = title;
  save_png(path, make_grid(torch::cat(images), opt));
}

std::int64_t count_params(const std::vector<torch::Tensor>& ts) {
  std::int64_t n = 0;
  for (const auto& t : ts) n += t.numel();
  return n;
}

std::optional<ProbeNet> optional_probe(const std::string& path) {
  if (path.empty()) return std::nullopt;
  return with_field("probe", [&] { return load_probe(path); });
}

}  // namespace

void e2gan_base_job(const E2GanBaseConfig& c, JobContext& ctx) {
  // Config -> build: the edits' pairs (one generator row each), the generator, the discriminator.
  if (c.pairs.empty()) fail_field("pairs", "is empty: give the edit-pairs files (e2gan_data) of the edits to learn");
  const torch::Device device = select_device(c.device);
  std::vector<PairSet> train, val;
  GeneratorInfo info;
  for (const auto& path : c.pairs) {
    EditPairs p = with_field("pairs", [&] { return load_edit_pairs(path); });
    if (std::find(info.edits.begin(), info.edits.end(), p.edit) != info.edits.end())
      fail_field("pairs", path, ": edit '", p.edit, "' is given twice");
    val.push_back(held_out(p, path));
    train.push_back(p.train);
    info.edits.push_back(p.edit);
    if (train.back().input.size(2) != train.front().input.size(2))
      fail_field("pairs", path, ": images of ", train.back().input.size(2), " px, the first file's are ",
                 train.front().input.size(2));
  }
  info.image_size = train.front().input.size(2);
  info.config = c.generator;
  info.config.num_edits = static_cast<std::int64_t>(info.edits.size());
  if (info.image_size % info.config.stride() != 0)
    fail_field("pairs", "images of ", info.image_size, " px are not a multiple of the generator's stride ",
               info.config.stride());
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  E2GanGenerator g(info.config);
  g->to(device);
  std::vector<EditRef> rows(info.edits.size());
  for (std::size_t e = 0; e < rows.size(); ++e) rows[e].row = static_cast<std::int64_t>(e);
  GanTraining gan(g, train, rows, c.loss, static_cast<std::uint64_t>(c.seed) + 1, device, ctx.shard);
  auto opt = gan.optimizer(g->parameters());
  const std::int64_t params = count_params(g->parameters());
  ctx.report.info("E2GAN base generator: " + std::to_string(params) + " parameters, " +
                  std::to_string(info.edits.size()) + " edits, " + std::to_string(info.image_size) + " px");
  TrainLoop loop(ctx, c.train,
                 {{{"generator.", g.get()}, {"discriminator.", gan.discriminator().get()}}, opt.get(), &gan.rng()});
  loop.clip(g->parameters());
  auto probe = optional_probe(c.probe);

  auto evaluate = [&](std::int64_t done) {
    std::map<std::string, double> scalars;
    json per_edit;
    for (std::size_t e = 0; e < rows.size(); ++e) {
      const Fidelity f = fidelity(g, rows[e], val[e], probe ? &*probe : nullptr);
      per_edit[info.edits[e]] = f.to_json();
      scalars["val_l1/" + info.edits[e]] = f.l1;
      scalars["val_psnr/" + info.edits[e]] = f.psnr;
    }
    ctx.report.progress("eval", done, c.train.steps, scalars);
    save_edit_grid(g, val, rows, info.edits, "step " + std::to_string(done), ctx.path("preview.png"));
    ctx.report.artifact("preview", ctx.path("preview.png"));
    return per_edit;
  };
  loop.every(c.eval_every, [&](std::int64_t done) { evaluate(done); });
  g->train();
  loop.run([&](std::int64_t) { return gan.step(c.train.batch); });

  // Finish: the generator file, held-out fidelity per edit, metrics.json.
  save_generator(ctx.path(c.output), g, info, to_json(c));
  ctx.report.artifact("generator", ctx.path(c.output));
  const json per_edit = evaluate(c.train.steps);
  json m = {{"parameters", params},
            {"edits", per_edit},
            {"train_seconds", loop.step_seconds()},
            {"image_size", info.image_size},
            {"device", device.str()}};
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  std::map<std::string, double> scalars = {{"parameters", static_cast<double>(params)},
                                           {"train_seconds", loop.step_seconds()}};
  for (const auto& [edit, f] : per_edit.items()) scalars["val_l1/" + edit] = f["l1"].get<double>();
  ctx.report.metrics(scalars);
}

// ---- e2gan_concept ----------------------------------------------------------------------------------------

namespace {

// LoRA per crucial layer group at the given ranks (a rank of 0 leaves the group without LoRA).
std::vector<LoRA> crucial_loras(E2GanGenerator& g, const std::map<std::string, std::int64_t>& ranks, Rng& init) {
  std::vector<LoRA> loras;
  for (const auto& [group, patterns] : e2gan_crucial_groups()) {
    const auto r = ranks.at(group);
    if (r <= 0) continue;
    loras.push_back(LoRA::create(*g, patterns, {.rank = r, .alpha = static_cast<double>(r)}, &init));
    loras.back().to(g->edits.device());
    loras.back().attach(g->hooks(), *g, 1.0);
  }
  return loras;
}

// Train `trained` tensors of g (everything else frozen) for `steps` without checkpoints (search trials).
void short_run(E2GanGenerator& g, const std::vector<torch::Tensor>& trained, const std::vector<PairSet>& sets,
               const EditRef& ref, const E2GanConceptConfig& c, std::int64_t steps, std::uint64_t seed, JobContext& ctx,
               const std::string& phase) {
  torch::manual_seed(seed);  // the discriminator's initial weights: the same for every trial and every run
  GanTraining gan(g, sets, {ref}, c.loss, seed, g->edits.device());
  auto opt = gan.optimizer(trained);
  g->train();
  for (std::int64_t s = 0; s < steps; ++s) {
    ctx.check_cancel();
    auto r = gan.step(c.train.batch);
    opt->zero_grad();
    r.loss.backward();
    opt->step();
    if ((s + 1) % 25 == 0 || s + 1 == steps)
      ctx.report.progress(phase, s + 1, steps, {{"l1", r.scalars["l1"].item<double>()}});
  }
}

std::vector<torch::Tensor> lora_params(const std::vector<LoRA>& loras) {
  std::vector<torch::Tensor> out;
  for (const auto& l : loras)
    for (auto& p : l.parameters()) out.push_back(p);
  return out;
}

}  // namespace

std::int64_t smallest_rank_within(const std::vector<std::pair<std::int64_t, double>>& trials, double tolerance) {
  if (trials.empty()) throw std::invalid_argument("rank search: no trials to choose from");
  double best = trials.front().second;
  for (const auto& [r, l1] : trials) best = std::min(best, l1);
  std::int64_t chosen = -1;
  for (const auto& [r, l1] : trials)
    if (l1 <= best * (1 + tolerance) && (chosen < 0 || r < chosen)) chosen = r;
  return chosen;
}

void e2gan_concept_job(const E2GanConceptConfig& c, JobContext& ctx) {
  // Config -> build: the base generator (or a fresh one of its shape), the new edit's pairs.
  if (c.pairs.empty()) fail_field("pairs", "is required: the new edit's edit-pairs file (e2gan_data)");
  if (c.generator.empty()) fail_field("generator", "is required: the base generator (e2gan_base)");
  if (c.method == EditMethod::LoRA && c.search && c.ranks.empty()) fail_field("ranks", "is empty: no rank to search");
  const torch::Device device = select_device(c.device);
  GeneratorInfo info;
  E2GanGenerator g = with_field("generator", [&] { return load_generator(c.generator, &info); });
  const std::int64_t base_params = count_params(g->parameters());
  const std::string base_hash = model_hash(*g);
  EditPairs pairs = with_field("pairs", [&] { return load_edit_pairs(c.pairs); });
  const std::string edit = c.edit.empty() ? pairs.edit : c.edit;
  if (c.method != EditMethod::Scratch && std::find(info.edits.begin(), info.edits.end(), edit) != info.edits.end())
    fail_field("edit", "'", edit, "' is already an edit of the base generator; name the new edit otherwise");
  if (pairs.train.input.size(2) % info.config.stride() != 0)
    fail_field("pairs", "images of ", pairs.train.input.size(2), " px are not a multiple of the generator's stride ",
               info.config.stride());
  const PairSet val = held_out(pairs, c.pairs);
  const std::vector<PairSet> sets = {pairs.train};
  auto probe = optional_probe(c.probe);
  // The new edit's tokens start as the mean of the base's edits (a scratch generator: its own row 0).
  const torch::Tensor mean_edit = g->edits.detach().mean(0).clone();
  if (c.method == EditMethod::Scratch) {
    torch::manual_seed(static_cast<std::uint64_t>(c.seed));
    info.config.num_edits = 1;
    g = E2GanGenerator(info.config);
  }
  g->to(device);
  EditRef ref;
  ref.tokens = c.method == EditMethod::Scratch ? g->edits[0] : mean_edit.to(device).clone().requires_grad_(true);

  std::vector<torch::Tensor> trained;
  std::vector<LoRA> loras;
  std::map<std::string, std::int64_t> ranks;
  json search_log = json::array();
  double search_seconds = 0;
  if (c.method == EditMethod::Full) {
    trained = g->parameters();
    trained.push_back(ref.tokens);
  } else if (c.method == EditMethod::Scratch) {
    trained = g->parameters();
  } else {
    for (auto& p : g->parameters()) p.set_requires_grad(false);
    for (const auto& [group, patterns] : e2gan_crucial_groups()) ranks[group] = c.rank;
    if (c.search) {
      // Rank search, one layer group at a time (down, block, up): a short trial at each candidate rank with
      // the other groups at the smallest candidate (or the rank already chosen for them); the group takes
      // the smallest rank whose held-out L1 is within `tolerance` of its best trial's. Finished trials are
      // kept in rank_search.json, so a resumed job does not repeat them.
      const auto t0 = Clock::now();
      const auto smallest = *std::min_element(c.ranks.begin(), c.ranks.end());
      for (auto& [group, r] : ranks) r = smallest;
      const auto file = ctx.path("rank_search.json");
      json done = std::filesystem::exists(file) ? load_json_file(file) : json::array();
      std::size_t trial = 0;
      for (const auto& [group, patterns] : e2gan_crucial_groups()) {
        std::vector<std::pair<std::int64_t, double>> results;
        for (const auto r : c.ranks) {
          auto trial_ranks = ranks;
          trial_ranks[group] = r;
          json entry = trial < done.size() ? done[trial] : json();
          if (entry.is_null()) {
            {
              torch::NoGradGuard no_grad;
              ref.tokens.copy_(mean_edit);
            }
            Rng trial_init(static_cast<std::uint64_t>(c.seed) + 100 + trial);
            auto trial_loras = crucial_loras(g, trial_ranks, trial_init);
            auto params = lora_params(trial_loras);
            params.push_back(ref.tokens);
            short_run(g, params, sets, ref, c, c.search_steps, static_cast<std::uint64_t>(c.seed) + 1, ctx,
                      "search " + group + " r" + std::to_string(r));
            const Fidelity f = fidelity(g, ref, val, nullptr);
            g->hooks().clear();
            entry = {{"group", group},       {"rank", r},
                     {"ranks", trial_ranks}, {"stored_parameters", count_params(params)},
                     {"val_l1", f.l1},       {"val_psnr", f.psnr}};
            done.push_back(entry);
            write_file_atomic(file, done.dump(2) + "\n");
          }
          ctx.report.info("rank search: " + group + " at rank " + std::to_string(r) + ": held-out L1 " +
                          std::to_string(entry["val_l1"].get<double>()) + " with " +
                          std::to_string(entry["stored_parameters"].get<std::int64_t>()) + " stored parameters");
          results.emplace_back(r, entry["val_l1"].get<double>());
          search_log.push_back(entry);
          ++trial;
        }
        const std::int64_t chosen = smallest_rank_within(results, c.tolerance);
        const double best = std::min_element(results.begin(), results.end(), [](const auto& a, const auto& b) {
                              return a.second < b.second;
                            })->second;
        ranks[group] = chosen;
        ctx.report.info("rank search: " + group + " takes rank " + std::to_string(chosen) + " (best held-out L1 " +
                        std::to_string(best) + ", tolerance " + std::to_string(c.tolerance) + ")");
      }
      torch::NoGradGuard no_grad;
      ref.tokens.copy_(mean_edit);
      search_seconds = seconds_since(t0);
      if (ctx.parallel != nullptr) {  // every rank ran the trials alike; rank 0's choice (and its log) decide
        std::vector<double> chosen;
        for (const auto& [group, r] : ranks) chosen.push_back(static_cast<double>(r));
        auto t = torch::tensor(chosen, torch::kDouble);
        ctx.parallel->broadcast({t});
        std::int64_t i = 0;
        for (auto& [group, r] : ranks) r = static_cast<std::int64_t>(t[i++].item<double>());
      }
    }
    Rng init(static_cast<std::uint64_t>(c.seed));
    loras = crucial_loras(g, ranks, init);
    trained = lora_params(loras);
    trained.push_back(ref.tokens);
  }
  const std::int64_t stored_params = count_params(trained);
  ctx.report.info(enum_name(c.method) + ": " + std::to_string(stored_params) + " stored parameters, " +
                  std::to_string(100.0 * static_cast<double>(stored_params) / static_cast<double>(base_params)) +
                  "% of the base generator's " + std::to_string(base_params));

  // Loop: GAN training of the trained tensors (a TensorSet view checkpoints exactly those).
  torch::manual_seed(static_cast<std::uint64_t>(c.seed) + 1);  // the discriminator's initial weights
  GanTraining gan(g, sets, {ref}, c.loss, static_cast<std::uint64_t>(c.seed) + 1, device, ctx.shard);
  auto opt = gan.optimizer(trained);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (std::size_t k = 0; k < trained.size(); ++k) named.emplace_back(indexed_name("t", k), trained[k]);
  TensorSet trained_set(named, /*copy=*/false);
  TrainLoop loop(
      ctx, c.train,
      {{{"trained.", trained_set.get()}, {"discriminator.", gan.discriminator().get()}}, opt.get(), &gan.rng()},
      c.lr_decay);
  loop.clip(trained);
  auto evaluate = [&](std::int64_t done) {
    const Fidelity f = fidelity(g, ref, val, probe ? &*probe : nullptr);
    std::map<std::string, double> scalars{{"val_l1", f.l1}, {"val_psnr", f.psnr}};
    if (f.l1_truth >= 0) scalars["val_l1_truth"] = f.l1_truth;
    if (f.fd >= 0) scalars["val_fd"] = f.fd;
    ctx.report.progress("eval", done, c.train.steps, scalars);
    save_edit_grid(g, {val}, {ref}, {edit}, "step " + std::to_string(done), ctx.path("preview.png"));
    ctx.report.artifact("preview", ctx.path("preview.png"));
    return f;
  };
  loop.every(c.eval_every, [&](std::int64_t done) { evaluate(done); });
  g->train();
  loop.run([&](std::int64_t) { return gan.step(c.train.batch); });

  // Finish: the edit file (LoRA + tokens) or a generator file, held-out fidelity, metrics.json.
  if (c.method == EditMethod::LoRA) {
    TensorMap tensors;
    for (const auto& l : loras)
      for (const auto& [name, t] : l.tensors()) tensors[name] = t.detach().cpu().contiguous();
    tensors["edit.tokens"] = ref.tokens.detach().cpu().contiguous();
    safetensors::save(ctx.path(c.output), tensors,
                      {{"atelier.kind", "e2gan_edit"},
                       {"edit", edit},
                       {"base_hash", base_hash},
                       {"generator", std::filesystem::absolute(c.generator).lexically_normal().string()},
                       {"ranks", json_text(ranks)},
                       {"atelier.config", json_text(to_json(c))}});
  } else {
    {
      torch::NoGradGuard no_grad;
      if (c.method == EditMethod::Full) g->add_edit(ref.tokens.detach());
    }
    if (c.method == EditMethod::Full) info.edits.push_back(edit);
    if (c.method == EditMethod::Scratch) info.edits = {edit};
    info.config = g->config();
    save_generator(ctx.path(c.output), g, info, to_json(c));
  }
  ctx.report.artifact(c.method == EditMethod::LoRA ? "edit" : "generator", ctx.path(c.output));
  const Fidelity f = evaluate(c.train.steps);
  json m = {{"method", enum_name(c.method)},
            {"edit", edit},
            {"stored_parameters", stored_params},
            {"base_parameters", base_params},
            {"stored_fraction", static_cast<double>(stored_params) / static_cast<double>(base_params)},
            {"train_seconds", loop.step_seconds()},
            {"search_seconds", search_seconds},
            {"fidelity", f.to_json()},
            {"device", device.str()}};
  if (c.method == EditMethod::LoRA) m["ranks"] = ranks;
  if (!search_log.empty()) m["rank_search"] = search_log;
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  ctx.report.metrics({{"stored_parameters", static_cast<double>(stored_params)},
                      {"train_seconds", loop.step_seconds()},
                      {"search_seconds", search_seconds},
                      {"val_l1", f.l1},
                      {"val_psnr", f.psnr}});
}

}  // namespace atelier
