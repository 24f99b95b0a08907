// Stable Diffusion: loading the three components and text-to-image.
// Ref: huggingface/diffusers@v0.42.1 pipelines/stable_diffusion/pipeline_stable_diffusion.py (__call__:
// prompt embeddings, [negative, prompt] batch for guidance, prepare_latents, the loop, decode),
// loaders/single_file_utils.py (single-file layout), schedulers' configs of the SD checkpoints.
#include "diffusion/stable_diffusion.h"

#include <fstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"

namespace atelier {
namespace fs = std::filesystem;

StableDiffusionImpl::StableDiffusionImpl(UNet2DConditionModel u, ClipTextModel t, AutoencoderKL v)
    : unet(register_module("unet", std::move(u))),
      text_encoder(register_module("text_encoder", std::move(t))),
      vae(register_module("vae", std::move(v))) {}

namespace {

constexpr const char* kLDMUNetKey = "model.diffusion_model.input_blocks.0.0.weight";

// The first of `names` that exists in `dir`; Error listing them when none does.
fs::path pick(const fs::path& dir, std::initializer_list<const char*> names) {
  std::error_code ec;
  for (const char* n : names)
    if (fs::is_regular_file(dir / n, ec)) return dir / n;
  std::string list;
  for (const char* n : names) list += (list.empty() ? "" : ", ") + std::string(n);
  fail(dir.string(), ": none of ", list, " (a diffusers Stable Diffusion folder holds one of them)");
}

json read_json_if_present(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) ? load_json_file(path) : json::object();
}

void set_family(StableDiffusionInfo& info, const UNetConfig& unet) {
  if (unet.cross_attention_dim == 768) {
    info.family = "sd1";
  } else if (unet.cross_attention_dim == 1024) {
    info.family = "sd2";
    info.pad_id = 0;
  } else {
    info.family = "sd (context " + std::to_string(unet.cross_attention_dim) + ")";
  }
}

}  // namespace

bool is_stable_diffusion(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return fs::is_regular_file(path / "model_index.json", ec);
  if (!fs::is_regular_file(path, ec)) return false;
  if (path.extension() == ".ckpt") return true;
  if (path.extension() != ".safetensors") return false;
  try {
    const safetensors::Reader reader(path);
    return reader.find(kLDMUNetKey) != nullptr;
  } catch (const std::exception&) {
    return false;  // not readable as safetensors: the caller's loader says why
  }
}

StableDiffusionModel load_stable_diffusion(const fs::path& path, const StableDiffusionLoadOptions& o) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path.string(), " does not exist");
  StableDiffusionModel sd;
  UNet2DConditionModel unet{nullptr};
  ClipTextModel text{nullptr};
  AutoencoderKL vae{nullptr};
  fs::path tokenizer = o.tokenizer;
  json scheduler = json::object();
  if (fs::is_directory(path, ec)) {
    if (!fs::is_regular_file(path / "model_index.json", ec))
      fail(path.string(), ": not a Stable Diffusion folder (no model_index.json)");
    sd.info.format = "diffusers folder";
    unet = load_unet(pick(path / "unet", {"diffusion_pytorch_model.safetensors",
                                          "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin"}));
    text = load_clip_text(
        pick(path / "text_encoder", {"model.safetensors", "model.fp16.safetensors", "pytorch_model.bin"}));
    vae = load_vae(pick(path / "vae", {"diffusion_pytorch_model.safetensors",
                                       "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin"}));
    if (fs::is_regular_file(path / "tokenizer" / "merges.txt", ec)) tokenizer = path / "tokenizer" / "merges.txt";
    const fs::path unet_file =
        pick(path / "unet", {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                             "diffusion_pytorch_model.bin"});
    if (unet_file.extension() == ".safetensors")
      if (const auto* e = safetensors::Reader(unet_file).find("conv_in.weight"))
        sd.info.unet_file_dtype = safetensors::torch_dtype(e->dtype);
    scheduler = read_json_if_present(path / "scheduler" / "scheduler_config.json");
  } else {
    sd.info.format = "single file (LDM names)";
    const TensorFile file = load_tensor_file(path);
    if (tensors_under(file.tensors, "model.diffusion_model.").empty() &&
        tensors_under(file.tensors, "state_dict.model.diffusion_model.").empty())
      fail(path.string(), ": no model.diffusion_model.* tensors; not a Stable Diffusion checkpoint");
    for (const char* key : {kLDMUNetKey, "state_dict.model.diffusion_model.input_blocks.0.0.weight"})
      if (auto it = file.tensors.find(key); it != file.tensors.end())
        sd.info.unet_file_dtype = it->second.scalar_type();
    unet = UNet2DConditionModel(with_context(
        [&] { return detect_unet_config(unet_tensors_to_diffusers(file.tensors), o.unet_base); }, path.string()));
    load_unet_state(*unet, file.tensors, path.string());
    text =
        ClipTextModel(with_context([&] { return detect_clip_text_config(file.tensors, o.text_base); }, path.string()));
    load_clip_text_state(*text, file.tensors, path.string());
    vae = AutoencoderKL(with_context([&] { return detect_vae_config(file.tensors, o.vae_base); }, path.string()));
    load_vae_state(*vae, file.tensors, path.string());
  }
  set_family(sd.info, unet->config());
  if (!tokenizer.empty()) sd.tokenizer = std::make_shared<const ClipBPETokenizer>(ClipBPETokenizer::load(tokenizer));
  sd.info.default_size = unet->config().sample_size * vae->config().downscale();

  // Scheduler settings: the folder's config, else SD's (scaled_linear 0.00085..0.012, steps_offset 1,
  // set_alpha_to_one false, epsilon).
  const std::string beta_schedule = scheduler.value("beta_schedule", std::string("scaled_linear"));
  const auto T = scheduler.value("num_train_timesteps", std::int64_t{1000});
  const double beta_start = scheduler.value("beta_start", 0.00085), beta_end = scheduler.value("beta_end", 0.012);
  if (beta_schedule == "scaled_linear")
    sd.schedule = NoiseSchedule::scaled_linear(T, beta_start, beta_end);
  else if (beta_schedule == "linear")
    sd.schedule = NoiseSchedule::linear(T, beta_start, beta_end);
  else
    fail(path.string(), ": scheduler beta_schedule '", beta_schedule, "' is not one of: scaled_linear, linear");
  sd.info.steps_offset = scheduler.value("steps_offset", std::int64_t{1});
  sd.info.set_alpha_to_one = scheduler.value("set_alpha_to_one", false);
  const std::string prediction =
      o.prediction != "auto" ? o.prediction : scheduler.value("prediction_type", std::string("epsilon"));
  sd.info.prediction = prediction_by_name(prediction);

  sd.model = StableDiffusion(unet, text, vae);
  sd.model->eval();
  return sd;
}

void keep_file_dtype(StableDiffusionModel& sd) {
  const auto d = sd.info.unet_file_dtype;
  if (d == torch::kHalf || d == torch::kBFloat16) sd.model->unet->to(d);
}

torch::Tensor encode_prompts(StableDiffusionModel& sd, const std::vector<std::string>& texts, std::int64_t clip_skip) {
  torch::NoGradGuard no_grad;
  if (!sd.tokenizer) fail_field("tokenizer", "no CLIP vocabulary was given to encode prompts with");
  const auto device = sd.model->unet->conv_in->weight.device();
  const auto ids = clip_token_tensor(sd.tokenizer->tokenize(texts, ClipBPETokenizer::kContextLength, sd.info.pad_id));
  if (clip_skip < 0 || clip_skip >= sd.model->text_encoder->config().num_hidden_layers)
    fail_field("clip_skip", clip_skip, " is outside [0, ", sd.model->text_encoder->config().num_hidden_layers - 1, "]");
  return sd.model->text_encoder->forward(ids.to(device), clip_skip);
}

torch::Tensor text_to_latents(StableDiffusionModel& sd, const TextToImage& r, const StepObserver& observe) {
  torch::NoGradGuard no_grad;
  sd.model->eval();
  auto& unet = sd.model->unet;
  const auto device = unet->conv_in->weight.device();
  const auto n = static_cast<std::int64_t>(r.prompts.size());
  if (n == 0) fail_field("prompts", "no prompt given: a text-to-image model needs at least one");
  // Sizes: the VAE halves the side per block, the UNet per down block but the last.
  const std::int64_t vae_factor = sd.model->vae->config().downscale();
  const std::int64_t multiple = vae_factor * (std::int64_t{1} << (unet->config().blocks() - 1));
  const std::int64_t height = r.height > 0 ? r.height : sd.info.default_size;
  const std::int64_t width = r.width > 0 ? r.width : sd.info.default_size;
  if (height % multiple != 0) fail_field("height", height, " is not a multiple of ", multiple);
  if (width % multiple != 0) fail_field("width", width, " is not a multiple of ", multiple);

  const bool guided = r.sampler.cfg_scale > 1.0;
  const auto cond = encode_prompts(sd, r.prompts, r.clip_skip);
  const auto context =
      guided ? torch::cat({encode_prompts(sd, std::vector<std::string>(static_cast<std::size_t>(n), r.negative_prompt),
                                          r.clip_skip),
                           cond})
             : cond;
  const double scale = r.sampler.cfg_scale;
  Denoiser denoise = [&](const torch::Tensor& x, const torch::Tensor& t) {
    if (!guided) return unet->forward(x, t, context);
    auto out = unet->forward(torch::cat({x, x}), torch::cat({t, t}), context);
    auto uncond = out.narrow(0, 0, n), text = out.narrow(0, n, n);
    return uncond + scale * (text - uncond);
  };
  Rng rng(r.seed);
  auto x = rng.randn({n, unet->config().in_channels, height / vae_factor, width / vae_factor},
                     torch::TensorOptions().dtype(torch::kFloat).device(device));
  SamplerModel m{sd.schedule, sd.info.prediction};
  m.steps_offset = sd.info.steps_offset;
  m.set_alpha_to_one = sd.info.set_alpha_to_one;
  return run_sampler(m, r.sampler, denoise, x, rng, observe);
}

torch::Tensor text_to_image(StableDiffusionModel& sd, const TextToImage& r, const StepObserver& observe) {
  const auto latents = text_to_latents(sd, r, observe);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> images;  // one at a time: an SD decoder at 512x512 holds GBs of activations
  for (std::int64_t i = 0; i < latents.size(0); ++i)
    images.push_back(sd.model->vae->from_latent(latents.narrow(0, i, 1)).clamp(-1, 1).cpu());
  return torch::cat(images);
}

}  // namespace atelier
