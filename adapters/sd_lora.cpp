#include "adapters/sd_lora.h"

#include <torch/torch.h>

#include <algorithm>

#include "adapters/lora.h"
#include "adapters/lora_files.h"
#include "adapters/ortho.h"
#include "core/image.h"
#include "core/report.h"
#include "core/runtime.h"
#include "core/train_loop.h"
#include "data/folder_dataset.h"
#include "data/training_images.h"
#include "diffusion/stable_diffusion.h"

namespace atelier {
namespace {

// LoRA targets of the DiT's defaults are replaced by the UNet's attention projections.
std::vector<std::string> unet_targets(const ConceptConfig& c) {
  if (c.targets == ConceptConfig{}.targets) return {"to_q", "to_k", "to_v", "to_out.0"};
  return c.targets;
}

// Images and captions encoded once: latents [N, 4, h, w] and text embeddings [N, 77, D] on `device`.
struct EncodedFolder {
  torch::Tensor latents, context;
  std::vector<std::string> captions;
};

EncodedFolder encode_folder(StableDiffusionModel& sd, const ConceptConfig& c, const std::string& subject,
                            JobContext& ctx) {
  torch::NoGradGuard no_grad;
  const FolderDataset folder = with_field("images", [&] { return FolderDataset::scan(c.images); });
  const int size = static_cast<int>(sd.info.default_size);
  EncodedFolder out;
  std::vector<torch::Tensor> latents, context;
  for (std::size_t i = 0; i < folder.size(); ++i) {
    ctx.check_cancel();
    const auto& item = folder.items()[i];
    out.captions.push_back(item.caption.empty() ? subject : item.caption);
    const auto device = sd.model->unet->conv_in->weight.device();
    latents.push_back(sd.model->vae->to_latent(folder.load(i, size).unsqueeze(0).to(device)));
    context.push_back(encode_prompts(sd, {out.captions.back()}));
    ctx.report.progress("encode", static_cast<std::int64_t>(i) + 1, static_cast<std::int64_t>(folder.size()));
  }
  out.latents = torch::cat(latents);
  out.context = torch::cat(context);
  return out;
}

}  // namespace

void sd_lora_job(const ConceptConfig& c, JobContext& ctx, bool ortho) {
  if (c.images.empty())
    fail_field("images", "a Stable Diffusion base learns from a folder of captioned images; give one");
  const torch::Device device = select_device(c.device);
  StableDiffusionModel sd = with_field("base", [&] { return load_stable_diffusion(c.base, {c.tokenizer, "auto"}); });
  sd.model->to(device);
  for (auto& p : sd.model->parameters()) p.set_requires_grad(false);
  const std::string subject =
      !c.token.empty() ? c.token : std::filesystem::path(c.images).lexically_normal().filename().string();

  // Config -> build: the encoded folder, the LoRA on the UNet's layers, AdamW, the loop.
  const EncodedFolder data = encode_folder(sd, c, subject, ctx);
  auto& unet = sd.model->unet;
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
  ctx.report.info(std::string(ortho ? "Stable Diffusion orthogonal LoRA '" : "Stable Diffusion LoRA '") + subject +
                  "': " + std::to_string(numel) + " parameters on " + std::to_string(lora.paths().size()) +
                  " UNet layers; " + std::to_string(data.captions.size()) + " captioned images at " +
                  std::to_string(sd.info.default_size) + " px");
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
  std::vector<std::string> prompts(data.captions.begin(),
                                   data.captions.begin() + std::min<std::size_t>(2, data.captions.size()));
  auto preview = [&](const std::string& file, const std::string& title) {
    TextToImage r;
    r.prompts = prompts;
    r.sampler.steps = c.preview.sample_steps;
    r.sampler.cfg_scale = c.preview.cfg_scale;
    r.seed = static_cast<std::uint64_t>(c.seed) + 3;
    const auto images = text_to_image(sd, r, cancel_observer(&ctx.cancel));
    GridOptions grid;
    grid.columns = static_cast<int>(images.size(0));
    grid.scale = std::max<int>(1, 64 / static_cast<int>(images.size(-1)));
    grid.title = title;
    save_png(ctx.path(file), make_grid(images, grid));
    ctx.report.artifact(file, ctx.path(file));
  };
  if (loop.start() == 0) {
    lora.detach(unet->hooks);
    preview("before.png", "before: base model");
    lora.attach(unet->hooks, *unet);
  }
  loop.every(c.preview.sample_every, [&](std::int64_t done) {
    preview("preview.png", "step " + std::to_string(done));
    write_adapter();
  });

  // Loop: the UNet's denoising loss on the encoded folder, LoRA attached.
  const auto& schedule = sd.schedule;
  const auto abar = schedule.alphas_cumprod.to(device, torch::kFloat);
  const auto on_device = torch::TensorOptions().device(device);
  const std::int64_t batch = c.train.batch;
  const auto seed = static_cast<std::uint64_t>(c.seed) + 7;
  loop.run([&](std::int64_t step) {
    const auto idx = epoch_positions(data.latents.size(0), seed, step * batch, batch).to(device);
    auto z0 = data.latents.index_select(0, idx);
    auto context = data.context.index_select(0, idx);
    auto t = rng.randint(schedule.size(), {batch}, on_device);
    auto noise = rng.randn(z0.sizes(), on_device);
    auto a = abar.index_select(0, t).view({-1, 1, 1, 1});
    auto zt = a.sqrt() * z0 + (1 - a).sqrt() * noise;
    auto target = sd.info.prediction == Prediction::v ? a.sqrt() * noise - (1 - a).sqrt() * z0 : noise;
    auto pred = unet->forward(zt, t.to(torch::kFloat), context);
    return TrainStep{torch::mse_loss(pred, target)};
  });

  // Finish: the adapter and the samples after training.
  write_adapter();
  preview("after.png", subject + ": " + std::to_string(c.train.steps) + " steps");
}

}  // namespace atelier
