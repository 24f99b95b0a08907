#include "adapters/sd_tuning.h"

#include <torch/torch.h>

#include <algorithm>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "adapters/lora_files.h"
#include "adapters/ortho.h"
#include "core/distributed.h"
#include "core/image.h"
#include "core/report.h"
#include "core/runtime.h"
#include "core/train_loop.h"
#include "data/folder_dataset.h"
#include "data/training_images.h"
#include "diffusion/stable_diffusion.h"

namespace atelier {
namespace {

// What both kinds of SD training share: the model (frozen, on the device), the folder encoded once, the
// name of what is learnt, and the captions the preview grids draw.
struct SDTraining {
  StableDiffusionModel sd;
  torch::Tensor latents, context;  // [N, 4, h, w], [N, 77, D] on the device
  std::vector<std::string> captions;
  std::string subject;

  SDTraining(const std::string& base, const std::string& tokenizer, const std::string& images, const std::string& token,
             const std::string& device, JobContext& ctx) {
    if (images.empty())
      fail_field("images", "a Stable Diffusion base learns from a folder of captioned images; give one");
    StableDiffusionLoadOptions options;
    options.tokenizer = tokenizer;
    sd = with_field("base", [&] { return load_stable_diffusion(base, options); });
    sd.model->to(select_device(device));
    for (auto& p : sd.model->parameters()) p.set_requires_grad(false);
    subject = !token.empty() ? token : std::filesystem::path(images).lexically_normal().filename().string();
    encode(images, ctx);
  }

  torch::Device device() const { return sd.model->unet->conv_in->weight.device(); }

  void encode(const std::string& images, JobContext& ctx) {
    torch::NoGradGuard no_grad;
    const FolderDataset folder = with_field("images", [&] { return FolderDataset::scan(images); });
    const int size = static_cast<int>(sd.info.default_size);
    std::vector<torch::Tensor> z, text;
    for (std::size_t i = 0; i < folder.size(); ++i) {
      ctx.check_cancel();
      const auto& item = folder.items()[i];
      captions.push_back(item.caption.empty() ? subject : item.caption);
      z.push_back(sd.model->vae->to_latent(folder.load(i, size).unsqueeze(0).to(device())));
      text.push_back(encode_prompts(sd, {captions.back()}));
      ctx.report.progress("encode", static_cast<std::int64_t>(i) + 1, static_cast<std::int64_t>(folder.size()));
    }
    latents = torch::cat(z);
    context = torch::cat(text);
  }

  std::string describe() const {
    return std::to_string(captions.size()) + " captioned images at " + std::to_string(sd.info.default_size) + " px";
  }

  // The denoising loss of step `step` (batch positions from the seeded epochs of `seed`) on this rank's
  // rows of the global batch, whose random numbers are drawn as one process draws them.
  torch::Tensor loss(std::int64_t step, std::int64_t batch, std::uint64_t seed, Rng& rng, const Shard& shard) {
    const auto& schedule = sd.schedule;
    const auto on_device = torch::TensorOptions().device(device());
    const auto idx = shard_rows(epoch_positions(latents.size(0), seed, step * batch, batch), shard).to(device());
    auto z0 = latents.index_select(0, idx);
    auto noise_shape = z0.sizes().vec();
    noise_shape[0] = batch;
    auto t = shard_rows(rng.randint(schedule.size(), {batch}, on_device), shard);
    auto noise = shard_rows(rng.randn(noise_shape, on_device), shard);
    auto a = schedule.alphas_cumprod.to(device(), torch::kFloat).index_select(0, t).view({-1, 1, 1, 1});
    auto zt = a.sqrt() * z0 + (1 - a).sqrt() * noise;
    auto target = sd.info.prediction == Prediction::v ? a.sqrt() * noise - (1 - a).sqrt() * z0 : noise;
    auto pred = sd.model->unet->forward(zt, t.to(torch::kFloat), context.index_select(0, idx));
    return torch::mse_loss(pred, target);
  }

  // A grid of the first two captions, one column each.
  void preview(const PreviewSettings& p, std::uint64_t seed, const std::string& file, const std::string& title,
               JobContext& ctx) {
    TextToImage r;
    r.prompts.assign(captions.begin(), captions.begin() + std::min<std::size_t>(2, captions.size()));
    r.sampler.steps = p.sample_steps;
    r.sampler.cfg_scale = p.cfg_scale;
    r.seed = seed;
    const auto images = text_to_image(sd, r, cancel_observer(&ctx.cancel));
    GridOptions grid;
    grid.columns = static_cast<int>(images.size(0));
    grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
    grid.title = title;
    save_png(ctx.path(file), make_grid(images, grid));
    ctx.report.artifact(file, ctx.path(file));
  }
};

// LoRA targets of the DiT's defaults are replaced by the UNet's attention projections.
std::vector<std::string> unet_targets(const ConceptConfig& c) {
  if (c.targets == ConceptConfig{}.targets) return {"to_q", "to_k", "to_v", "to_out.0"};
  return c.targets;
}

// The UNet's transformer blocks by path in forward order: down blocks, the mid block, up blocks.
std::vector<std::pair<std::string, UNetTransformerBlockImpl*>> transformer_blocks(UNet2DConditionModelImpl& unet) {
  std::vector<std::pair<std::string, UNetTransformerBlockImpl*>> parts[3];
  for (const auto& item : unet.named_modules()) {
    auto* block = dynamic_cast<UNetTransformerBlockImpl*>(item.value().get());
    if (block == nullptr) continue;
    const std::string& path = item.key();
    const int part = path.rfind("down_blocks.", 0) == 0 ? 0 : path.rfind("mid_block.", 0) == 0 ? 1 : 2;
    parts[part].emplace_back(path, block);
  }
  auto out = parts[0];
  for (int k = 1; k < 3; ++k) out.insert(out.end(), parts[k].begin(), parts[k].end());
  return out;
}

// The transformer-block branches a DiffFit setting names: the DiT's "attn" (both attentions) and "mlp"
// (the feed-forward), or the UNet's own attn1, attn2, ff.
std::vector<std::string> unet_branches(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  auto add = [&](const std::string& b) {
    if (std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
  };
  for (const auto& n : names) {
    if (n == "attn") {
      add("attn1");
      add("attn2");
    } else if (n == "mlp") {
      add("ff");
    } else if (n == "attn1" || n == "attn2" || n == "ff") {
      add(n);
    } else {
      fail_field("gamma_branches", "'", n,
                 "' is not a branch of a UNet transformer block (attn, mlp, attn1, attn2, ff)");
    }
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

void sd_lora_job(const ConceptConfig& c, JobContext& ctx, bool ortho) {
  // Config -> build: the encoded folder, the LoRA on the UNet's layers, AdamW, the loop.
  SDTraining run(c.base, c.tokenizer, c.images, c.token, c.device, ctx);
  auto& unet = run.sd.model->unet;
  Rng init_rng(static_cast<std::uint64_t>(c.seed));
  LoRA lora = with_field("targets", [&] {
    if (!ortho) return LoRA::create(*unet, unet_targets(c), {c.rank, c.alpha, 0.0}, &init_rng);
    const OrthoAllocation a{static_cast<std::uint64_t>(c.ortho_seed), c.ortho_slot * c.rank, c.rank};
    return create_ortho_lora(*unet, unet_targets(c), a, c.alpha);
  });
  lora.attach(unet->hooks, *unet);
  std::vector<std::pair<std::string, torch::Tensor>> named;  // the LoRA's own factors (trained in place)
  for (std::size_t i = 0; i < lora.paths().size(); ++i) {
    const auto& l = lora.layers()[i];
    if (!ortho) named.emplace_back(lora.paths()[i] + ".lora_A.weight", l->down);  // ortho: the frozen basis
    named.emplace_back(lora.paths()[i] + ".lora_B.weight", l->up);
  }
  TensorSet trained(named, false);
  for (auto& t : trained->values) t.set_requires_grad(true);
  auto opt = std::make_unique<torch::optim::AdamW>(trained->values, torch::optim::AdamWOptions(c.lr).weight_decay(0));
  std::int64_t numel = 0;
  for (const auto& t : trained->values) numel += t.numel();
  ctx.report.info(std::string(ortho ? "Stable Diffusion orthogonal LoRA '" : "Stable Diffusion LoRA '") + run.subject +
                  "': " + std::to_string(numel) + " parameters on " + std::to_string(lora.paths().size()) +
                  " UNet layers; " + run.describe());
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  TrainLoop loop(ctx, c.train, {{{"train.", trained.get()}}, opt.get(), &rng});
  loop.clip(trained->values);

  // The kohya file: UNet layer paths under "unet." (lora_unet_*).
  auto write_adapter = [&] {
    LoRAWeights w;
    for (auto& [path, layer] : from_lora(lora).layers) w.layers["unet." + path] = layer;
    write_lora_file(ctx.path(c.output), w, LoRADialect::Kohya);
    ctx.report.artifact("adapter", ctx.path(c.output));
  };
  const auto preview_seed = static_cast<std::uint64_t>(c.seed) + 3;
  if (loop.start() == 0) {
    lora.detach(unet->hooks);
    run.preview(c.preview, preview_seed, "before.png", "before: base model", ctx);
    lora.attach(unet->hooks, *unet);
  }
  loop.every(c.preview.sample_every, [&](std::int64_t done) {
    run.preview(c.preview, preview_seed, "preview.png", "step " + std::to_string(done), ctx);
    write_adapter();
  });

  // Loop: the UNet's denoising loss on the encoded folder, LoRA attached.
  const auto seed = static_cast<std::uint64_t>(c.seed) + 7;
  loop.run([&](std::int64_t step) { return TrainStep{run.loss(step, c.train.batch, seed, rng, ctx.shard)}; });

  // Finish: the adapter and the samples after training.
  write_adapter();
  run.preview(c.preview, preview_seed, "after.png", run.subject + ": " + std::to_string(c.train.steps) + " steps", ctx);
}

void sd_difffit_job(const FineTuneConfig& c, JobContext& ctx) {
  const TuneMethod method = c.tune.method;
  if (method != TuneMethod::DiffFit && method != TuneMethod::BitFit)
    fail_field("method", enum_name(method), " on a Stable Diffusion base: use difffit or bitfit here",
               method == TuneMethod::LoRA ? ", or the lora job kind for a UNet LoRA" : "");
  if (c.fold) fail_field("fold", "a Stable Diffusion adapter is applied at sampling (sample's adapters), not folded");
  if (c.image_size != 0) fail_field("image_size", "a Stable Diffusion base trains at its own size; leave it 0");

  // Config -> build: the encoded folder, the UNet's biases and gammas as the trained tensors (live and EMA).
  SDTraining run(c.base, c.tokenizer, c.images, "", c.device, ctx);
  auto& unet = run.sd.model->unet;
  const std::string base_hash = model_hash(*unet);
  json settings = {{"method", enum_name(method)}, {"family", run.sd.info.family}};
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<bool> is_gamma;
  for (const auto& item : unet->named_parameters())
    if (ends_with(item.key(), ".bias")) {
      named.emplace_back("unet." + item.key(), item.value());
      is_gamma.push_back(false);
    }
  if (method == TuneMethod::DiffFit) {
    const auto blocks = transformer_blocks(*unet);
    const auto chosen = gamma_block_indices(c.tune.gamma_blocks, static_cast<std::int64_t>(blocks.size()));
    const auto branches = unet_branches(c.tune.gamma_branches);
    for (const auto b : chosen)
      for (const auto& branch : branches) {
        named.emplace_back("unet." + blocks[b].first + ".gamma_" + branch, blocks[b].second->add_gamma(branch));
        is_gamma.push_back(true);
      }
    settings["gamma_blocks"] = chosen;
    settings["gamma_branches"] = branches;
  }
  TensorSet live(named, false), ema(named, true);
  std::int64_t numel = 0, gammas = 0, total = 0;
  for (std::size_t i = 0; i < named.size(); ++i) {
    named[i].second.set_requires_grad(true);
    numel += named[i].second.numel();
    if (is_gamma[i]) gammas += named[i].second.numel();
  }
  for (const auto& p : unet->parameters()) total += p.numel();
  total -= gammas;
  ctx.report.info(enum_name(method) + " on the Stable Diffusion UNet: " + std::to_string(numel) +
                  " trainable parameters of " + std::to_string(total) + " (biases " + std::to_string(numel - gammas) +
                  ", gammas " + std::to_string(gammas) + "); " + run.describe());
  if (c.dry_run) {
    ctx.report.metrics({{"trainable_parameters", static_cast<double>(numel)},
                        {"model_parameters", static_cast<double>(total)},
                        {"trainable_fraction", static_cast<double>(numel) / static_cast<double>(total)}});
    return;
  }
  // DiffFit's learning rate for its tensors: lr * lr_scale (the biases and gammas are all it trains).
  auto opt = std::make_unique<torch::optim::AdamW>(live->values,
                                                   torch::optim::AdamWOptions(c.lr * c.lr_scale).weight_decay(0));
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  TrainLoop loop(ctx, c.train, {{{"train.", live.get()}, {"ema.", ema.get()}}, opt.get(), &rng}, c.lr_decay);
  loop.clip(live->values);
  loop.ema(*ema, *live, c.ema_decay);

  // Previews and the adapter carry the EMA values, swapped in for the call.
  auto with_ema = [&](const auto& f) {
    torch::NoGradGuard no_grad;
    with_values_of(*live, *ema, f);
  };
  auto write_adapter = [&] {
    TensorMap tensors;
    for (std::size_t i = 0; i < named.size(); ++i) tensors[named[i].first] = ema->values[i].detach();
    save_adapter(ctx.path(c.output), tensors, {adapter_method(method), base_hash, {}, settings, to_json(c)});
    ctx.report.artifact("adapter", ctx.path(c.output));
  };
  const auto preview_seed = static_cast<std::uint64_t>(c.seed) + 3;
  if (loop.start() == 0) run.preview(c.preview, preview_seed, "before.png", "before: base model", ctx);
  loop.every(c.preview.sample_every, [&](std::int64_t done) {
    with_ema([&] { run.preview(c.preview, preview_seed, "preview.png", "step " + std::to_string(done), ctx); });
    write_adapter();
  });

  // Loop: the UNet's denoising loss on the encoded folder.
  const auto seed = static_cast<std::uint64_t>(c.seed) + 7;
  loop.run([&](std::int64_t step) { return TrainStep{run.loss(step, c.train.batch, seed, rng, ctx.shard)}; });

  // Finish: the adapter and the samples after training.
  write_adapter();
  with_ema([&] {
    run.preview(c.preview, preview_seed, "after.png",
                run.subject + ": " + enum_name(method) + ", " + std::to_string(c.train.steps) + " steps", ctx);
  });
}

void apply_sd_adapters(StableDiffusionModel& sd, const std::vector<std::string>& files,
                       const std::vector<double>& weights) {
  if (!weights.empty() && weights.size() != files.size())
    fail_field("adapter_weights", weights.size(), " weights for ", files.size(), " adapters");
  auto& unet = *sd.model->unet;
  std::string hash;  // of the UNet as loaded, before any adapter changes it
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : unet.named_parameters()) params.emplace(item.key(), item.value());
  std::map<std::string, UNetTransformerBlockImpl*> blocks;
  for (const auto& [path, block] : transformer_blocks(unet)) blocks.emplace(path, block);
  for (std::size_t k = 0; k < files.size(); ++k) {
    const std::string& file = files[k];
    const double w = weights.empty() ? 1.0 : weights[k];
    with_field("adapters", [&] {
      if (!std::filesystem::exists(file)) fail(file, " does not exist");
      if (!is_adapter_file(file)) return merge_lora_files(*sd.model, {file}, {w});
      const AdapterFile a = load_adapter(file);
      if (a.info.method != AdapterMethod::DiffFit && a.info.method != AdapterMethod::BitFit)
        fail(file, " is a ", enum_name(a.info.method),
             " adapter of an Atelier DiT; a Stable Diffusion base takes difffit/bitfit adapters trained on it and "
             "LoRA files");
      if (hash.empty()) hash = model_hash(unet);
      if (a.info.base_hash != hash)
        fail(file, " was trained on another UNet (", a.info.base_hash.substr(0, 12), "..., this base is ",
             hash.substr(0, 12), "...)");
      torch::NoGradGuard no_grad;
      // Biases first, then the gammas scale their branch's output layer (with the bias just set).
      std::vector<std::pair<std::string, torch::Tensor>> gammas;
      for (const auto& [name, t] : a.tensors) {
        if (name.rfind("unet.", 0) != 0) fail(file, ": tensor '", name, "' is not a UNet tensor (unet.*)");
        const std::string path = name.substr(5);
        if (const auto dot = path.rfind(".gamma_"); dot != std::string::npos) {
          gammas.emplace_back(path, t);
          continue;
        }
        const auto it = params.find(path);
        if (it == params.end() || it->second.sizes() != t.sizes())
          fail(file, ": tensor '", name, "' does not fit this UNet");
        auto& p = it->second;
        p.copy_(p + w * (t.to(p.options()) - p));
      }
      for (const auto& [path, g] : gammas) {
        const auto dot = path.rfind(".gamma_");
        const auto it = blocks.find(path.substr(0, dot));
        const std::string branch = path.substr(dot + 7);
        if (it == blocks.end() || (branch != "attn1" && branch != "attn2" && branch != "ff"))
          fail(file, ": tensor 'unet.", path, "' names no transformer block branch of this UNet");
        UNetTransformerBlockImpl& block = *it->second;
        auto& layer = branch == "attn1" ? block.attn1->to_out : branch == "attn2" ? block.attn2->to_out : block.ff_out;
        if (g.numel() != layer->weight.size(0)) fail(file, ": tensor 'unet.", path, "' does not fit this UNet");
        const auto scale = (1 + w * (g.to(layer->weight.options()) - 1)).flatten();
        layer->weight.mul_(scale.unsqueeze(1));
        layer->bias.mul_(scale);
      }
    });
  }
}

}  // namespace atelier
