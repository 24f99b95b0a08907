#include "diffusion/generate.h"

#include <filesystem>

#include "core/atomic_file.h"
#include "core/image.h"
#include "core/runtime.h"
#include "data/shapes_data.h"
#include "diffusion/stable_diffusion.h"
#include "diffusion/vae.h"
#include "eval/metrics.h"

namespace atelier {

torch::Tensor run_sampler(const SamplerModel& m, const SamplerSettings& s, const Denoiser& denoise, torch::Tensor x,
                          Rng& rng, const StepObserver& observe, const ImageInit* init) {
  const NoiseSchedule& schedule = m.schedule;
  const Prediction prediction = m.prediction;
  auto spacing = [&](Spacing fallback) { return s.spacing == "auto" ? fallback : spacing_by_name(s.spacing); };
  const auto T = schedule.size();
  // With an image start: the list's tail, and the images noised to its first timestep with x as the noise.
  auto start = [&](std::vector<std::int64_t> ts) {
    if (init == nullptr) return ts;
    if (init->images.sizes() != x.sizes())
      fail("image-to-image: images ", init->images.sizes(), " do not match the model's samples ", x.sizes());
    if (init->strength < 0 || init->strength > 1)
      fail("image-to-image: strength ", init->strength, " is not in [0, 1]");
    const auto keep =
        std::min<std::size_t>(ts.size(), static_cast<std::size_t>(static_cast<double>(ts.size()) * init->strength));
    ts.erase(ts.begin(), ts.end() - static_cast<std::ptrdiff_t>(keep));
    if (!ts.empty()) {
      const double abar = schedule.abar(ts.front());
      x = std::sqrt(abar) * init->images.to(x.device()) + std::sqrt(1 - abar) * x;
    }
    return ts;
  };
  if (init != nullptr && s.sampler != "ddpm" && s.sampler != "ddim" && s.sampler != "dpmpp_2m")
    fail("image-to-image needs the ddpm, ddim or dpmpp_2m sampler, not '", s.sampler, "'");
  auto unchanged = [&] { return init->images.to(x.device()).clone(); };
  // diffusers adds steps_offset to "leading" timesteps only.
  auto leading_or = [&](Spacing sp) {
    return spaced_timesteps(T, s.steps, sp, sp == Spacing::leading ? m.steps_offset : 0);
  };
  if (s.sampler == "ddpm") {
    DDPMOptions o;
    o.prediction = prediction;
    o.variance = m.learned_sigma ? DDPMVariance::learned_range : DDPMVariance::fixed_small;
    auto ts =
        start(s.spacing == "auto" && m.dit_respacing ? respace(schedule, std::to_string(s.steps)).sampling_timesteps()
                                                     : leading_or(spacing(Spacing::leading)));
    return ts.empty() ? unchanged() : sample_ddpm(schedule, o, denoise, x, ts, rng, observe);
  }
  if (s.sampler == "ddim") {
    DDIMOptions o;
    o.prediction = prediction;
    o.eta = s.eta;
    o.set_alpha_to_one = m.set_alpha_to_one;
    auto ts = start(leading_or(spacing(Spacing::leading)));
    return ts.empty() ? unchanged() : sample_ddim(schedule, o, denoise, x, ts, rng, observe);
  }
  if (s.sampler == "euler" || s.sampler == "euler_a") {
    auto steps = sigma_steps(schedule, s.steps, spacing(Spacing::linspace));
    x = x * steps.init_noise_sigma;
    if (s.sampler == "euler") return sample_euler(prediction, denoise, x, steps, observe);
    return sample_euler_ancestral(prediction, denoise, x, steps, rng, observe);
  }
  if (s.sampler == "dpmpp_2m") {
    auto ts = start(dpm_solver_timesteps(T, s.steps, spacing(Spacing::linspace)));
    return ts.empty() ? unchanged() : sample_dpmpp_2m(schedule, prediction, denoise, x, ts, observe);
  }
  if (s.sampler == "lcm") {
    LCMOptions o;
    o.prediction = prediction;
    return sample_lcm(schedule, o, denoise, x, lcm_timesteps(T, s.steps), rng, observe);
  }
  fail("sampler '", s.sampler, "' is not one of: ddpm, ddim, euler, euler_a, dpmpp_2m, lcm");
}

torch::Tensor generate(DiT& model, const DiTModelInfo& info, const torch::Tensor& labels, const SamplerSettings& s,
                       Rng& rng, const StepObserver& observe, const ImageInit* init) {
  torch::NoGradGuard no_grad;
  model->eval();
  const auto& dc = model->config();
  const auto schedule = NoiseSchedule::by_name(info.schedule, info.num_train_timesteps);
  const auto n = labels.size(0);
  const auto null = torch::full_like(labels, model->null_class());
  const bool guided = s.cfg_scale != 1.0 && dc.class_dropout_prob > 0;
  Denoiser denoise = [&](const torch::Tensor& x, const torch::Tensor& t) {
    if (!guided) return model->forward(x, t, labels);
    auto out = model->forward(torch::cat({x, x}), torch::cat({t, t}), torch::cat({labels, null}));
    auto cond = out.narrow(0, 0, n), uncond = out.narrow(0, n, n);
    const auto c = dc.in_channels;
    auto guided_pred = uncond.narrow(1, 0, c) + s.cfg_scale * (cond.narrow(1, 0, c) - uncond.narrow(1, 0, c));
    return dc.learn_sigma ? torch::cat({guided_pred, cond.narrow(1, c, c)}, 1) : guided_pred;
  };
  // Noise is drawn on the CPU generator and moved, so a seed gives the same images on every device.
  auto x = rng.randn({n, dc.in_channels, dc.input_size, dc.input_size}, labels.options().dtype(torch::kFloat));
  const SamplerModel m{schedule, prediction_by_name(info.prediction), dc.learn_sigma, true};
  return run_sampler(m, s, denoise, x, rng, observe, init);
}

StepObserver cancel_observer(const CancelToken* cancel) {
  return [cancel](std::int64_t, std::int64_t, const torch::Tensor&, const torch::Tensor&) {
    if (cancel != nullptr && cancel->requested()) throw Cancelled();
  };
}

torch::Tensor checked_finite(const torch::Tensor& samples, const std::string& what) {
  if (!torch::isfinite(samples).all().item<bool>())
    fail(what, ": the model produced non-finite samples (NaN or infinite weights?); nothing was written");
  return samples;
}

torch::Tensor save_class_grid(DiT& model, const DiTModelInfo& info, std::int64_t per_class, std::int64_t steps,
                              double cfg_scale, std::uint64_t seed, const std::filesystem::path& path,
                              const std::string& title, const CancelToken* cancel) {
  SamplerSettings s;
  s.steps = steps;
  s.cfg_scale = cfg_scale;
  return save_class_grid(model, info, per_class, s, seed, path, title, cancel);
}

torch::Tensor save_class_grid(DiT& model, const DiTModelInfo& info, std::int64_t per_class, const SamplerSettings& s,
                              std::uint64_t seed, const std::filesystem::path& path, const std::string& title,
                              const CancelToken* cancel) {
  std::vector<std::int64_t> labels;
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(info.class_names.size()); ++k)
    labels.insert(labels.end(), per_class, k);
  Rng rng(seed);
  auto images =
      generate(model, info, torch::tensor(labels).to(model->pos_embed.device()), s, rng, cancel_observer(cancel));
  images = checked_finite(images, path.filename().string()).clamp(-1, 1).cpu();
  GridOptions grid;
  grid.columns = static_cast<int>(per_class);
  grid.row_labels = info.class_names;
  grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
  grid.title = title;
  save_png(path, make_grid(images, grid), {{"atelier.title", title}});
  return images;
}

namespace {
// Decodes latents one image at a time (an SD VAE decoder at 256x256 holds ~1 GB of activations).
torch::Tensor decode_latents(AutoencoderKL& vae, const torch::Tensor& z, JobContext& ctx) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < z.size(0); ++i) {
    ctx.check_cancel();
    out.push_back(vae->from_latent(z.narrow(0, i, 1)).cpu());
    ctx.report.progress("decode", i + 1, z.size(0));
  }
  return torch::cat(out);
}
}  // namespace

std::string sample_label(const SampleConfig& c) {
  std::string label = std::filesystem::path(c.model).filename().string();
  for (const auto& a : c.adapters) label += " + " + std::filesystem::path(a).stem().string();
  return label + ", " + c.sampler.sampler + " " + std::to_string(c.sampler.steps) + " steps, cfg " +
         json(c.sampler.cfg_scale).dump() + ", seed " + std::to_string(c.seed);
}

namespace {

std::string short_text(const std::string& text, std::size_t n) {
  return text.size() <= n ? text : text.substr(0, n - 3) + "...";
}

void sd_sample_job(const SampleConfig& c, JobContext& ctx, const SDAdapterApplier& apply) {
  if (!c.classes.empty())
    fail_field("classes", c.model, " is a text-to-image model (Stable Diffusion): give prompts, not classes");
  if (c.prompts.empty()) fail_field("prompts", c.model, " is a text-to-image model (Stable Diffusion): give prompts");
  if (static_cast<std::int64_t>(c.prompts.size()) * c.per_class > 4096)
    fail_field("per_class", c.prompts.size(), " prompts x ", c.per_class, " images is more than 4096 per job");
  const torch::Device device = select_device(c.device);
  StableDiffusionModel sd = with_field("model", [&] {
    return load_stable_diffusion(c.model, {c.tokenizer, c.prediction});
  });
  if (!c.vae.empty()) {
    AutoencoderKL vae = with_field("vae", [&] { return load_vae(c.vae); });
    sd.model->vae = sd.model->replace_module("vae", vae);
  }
  if (!c.adapters.empty()) {
    if (!apply) fail_field("adapters", "this build cannot apply adapters");
    apply(sd, c);
  }
  keep_file_dtype(sd);
  sd.model->to(device);
  ctx.report.info("Stable Diffusion (" + sd.info.family + ", " + sd.info.format + "), predicts " +
                  (sd.info.prediction == Prediction::v ? "v" : "eps"));
  TextToImage r;
  for (const auto& p : c.prompts)
    for (std::int64_t k = 0; k < c.per_class; ++k) r.prompts.push_back(p);
  r.negative_prompt = c.negative_prompt;
  r.width = c.width, r.height = c.height, r.clip_skip = c.clip_skip;
  r.sampler = c.sampler;
  r.seed = static_cast<std::uint64_t>(c.seed);
  auto images = text_to_image(sd, r, [&](std::int64_t step, std::int64_t steps, const auto&, const auto&) {
    ctx.check_cancel();
    ctx.report.progress("sample", step + 1, steps);
  });
  images = checked_finite(images, c.output);
  GridOptions grid;
  grid.columns = static_cast<int>(c.per_class);
  for (const auto& p : c.prompts) grid.row_labels.push_back(short_text(p, 24));
  grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
  grid.title = c.sampler.sampler + " " + std::to_string(c.sampler.steps) + " steps, cfg " +
               json(c.sampler.cfg_scale).dump() + ", seed " + std::to_string(c.seed);
  save_png(ctx.path(c.output), make_grid(images, grid), {{"atelier.config", json_text(to_json(c))}});
  ctx.report.artifact("samples", ctx.path(c.output));
}

}  // namespace

void sample_job(const SampleConfig& c, JobContext& ctx, const ModelLoader& loader,
                const SDAdapterApplier& sd_adapters) {
  if (is_stable_diffusion(c.model)) return sd_sample_job(c, ctx, sd_adapters);
  if (!c.prompts.empty())
    fail_field("prompts", c.model, " is class-conditional (a DiT): it takes classes, not prompts");
  const torch::Device device = select_device(c.device);
  DiTModelInfo info;
  if (!c.adapters.empty() && !loader) fail_field("adapters", "this build cannot apply adapters");
  DiT model = loader ? loader(c, &info) : with_field("model", [&] { return load_generator_model(c.model, &info); });
  const auto& dc = model->config();
  AutoencoderKL vae{nullptr};
  if (!c.vae.empty()) {
    vae = with_field("vae", [&] { return load_vae(c.vae); });
    if (vae->config().latent_channels != dc.in_channels)
      fail_field("vae", c.vae, " has ", vae->config().latent_channels, " latent channels but the model works on ",
                 dc.in_channels, "-channel inputs");
    vae->eval();
    vae->to(device);
  } else if (dc.in_channels != 3) {
    fail_field(
        "vae", c.model, " generates ", dc.in_channels,
        "-channel latents; give the VAE that decodes them (for the official DiT: sd-vae-ft-mse or sd-vae-ft-ema)");
  }
  model->to(device);
  std::vector<std::string> names = c.classes.empty() ? info.class_names : c.classes;
  if (static_cast<std::int64_t>(names.size()) * c.per_class > (1 << 16))
    fail_field("per_class", names.size(), " classes x ", c.per_class,
               " images is more than the limit of 65536 per job");
  std::vector<std::int64_t> labels;
  for (const auto& name : names) {
    auto it = std::find(info.class_names.begin(), info.class_names.end(), name);
    if (it == info.class_names.end()) fail_field("classes", "the model has no class '", name, "'");
    for (std::int64_t k = 0; k < c.per_class; ++k) labels.push_back(it - info.class_names.begin());
  }
  auto y = torch::tensor(labels, torch::kLong).to(device);
  Rng rng(static_cast<std::uint64_t>(c.seed));
  auto samples =
      generate(model, info, y, c.sampler, rng, [&](std::int64_t step, std::int64_t steps, const auto&, const auto&) {
        ctx.check_cancel();
        ctx.report.progress("sample", step + 1, steps);
      });
  auto images = checked_finite(vae ? decode_latents(vae, samples, ctx) : samples.cpu(), c.output).clamp(-1, 1);
  const int image_size = static_cast<int>(images.size(-1));

  GridOptions grid;
  grid.columns = static_cast<int>(c.per_class);
  grid.row_labels = names;
  grid.scale = std::max<int>(1, 64 / image_size);
  grid.title = c.sampler.sampler + " " + std::to_string(c.sampler.steps) + " steps, cfg " +
               json(c.sampler.cfg_scale).dump() + ", seed " + std::to_string(c.seed);
  save_png(ctx.path(c.output), make_grid(images, grid), {{"atelier.config", json_text(to_json(c))}});
  ctx.report.artifact("samples", ctx.path(c.output));

  if (c.probe.empty()) return;
  if (!info.data.is_object()) {
    ctx.report.info("no Shapes metrics: the model was not trained on the Shapes world");
    return;
  }
  if (!std::filesystem::exists(c.probe))
    fail_field("probe", c.probe, " does not exist (set \"probe\": \"\" to skip metrics)");
  ProbeNet probe = load_probe(c.probe);
  std::vector<std::int64_t> probe_labels;
  for (const auto& name : names)
    for (std::int64_t k = 0; k < c.per_class; ++k) probe_labels.push_back(probe_label_of(name));
  ShapesData data = from_json<ShapesData>(info.data);
  auto reference = shapes::make_batch(data.spec(image_size), 2, 0, c.reference_samples);
  // The floor of FD-shapes at this sample count: as many real test images, disjoint from the reference set.
  auto real = shapes::make_batch(data.spec(image_size), 2, c.reference_samples, images.size(0));
  // The model's patch grid in pixels (a latent model's patches cover patch x the VAE's downsampling).
  const auto pixel_patch = dc.patch_size * image_size / dc.input_size;
  std::map<std::string, double> m = {
      {"probe_accuracy", probe_accuracy(probe, images, torch::tensor(probe_labels, torch::kLong))},
      {"fd_shapes", fd_shapes(probe, images, reference.images)},
      {"fd_shapes_floor", fd_shapes(probe, real.images, reference.images)},
      {"sharpness", sharpness(images)},
      {"reference_sharpness", sharpness(reference.images)},
  };
  if (pixel_patch >= 2 && pixel_patch < image_size) {
    m["patch_texture"] = patch_texture(images, pixel_patch);
    m["reference_patch_texture"] = patch_texture(reference.images, pixel_patch);
  }
  // Per class: which classes the model draws recognisably (rows of the grid, per_class images each).
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto rows = torch::indexing::Slice(static_cast<std::int64_t>(i) * c.per_class,
                                             static_cast<std::int64_t>(i + 1) * c.per_class);
    m["probe_accuracy/" + names[i]] =
        probe_accuracy(probe, images.index({rows}), torch::full({c.per_class}, probe_labels[i * c.per_class]));
  }
  write_file_atomic(ctx.path("metrics.json"), json(m).dump(2) + "\n");
  ctx.report.metrics(m);
}

}  // namespace atelier
