// Stable Diffusion 1.x / 2.x / SD-Turbo as one model: the CLIP text encoder (diffusion/clip_text.h) with
// its BPE tokenizer (data/clip_tokenizer.h), the text-conditioned UNet (diffusion/unet.h) and the VAE
// (diffusion/vae.h), loaded from what artists download:
//   - a single checkpoint (.safetensors or .ckpt) with LDM names: model.diffusion_model.* (UNet),
//     cond_stage_model.* (SD1 CLIP-L or SD2 OpenCLIP-H) and first_stage_model.* (VAE);
//   - a diffusers pipeline folder (model_index.json, unet/, text_encoder/, vae/, tokenizer/merges.txt,
//     scheduler/scheduler_config.json), each component with its config.json.
// Text-to-image runs any sampler of samplers/ with classifier-free guidance over [negative, prompt]
// embeddings in one batch, from noise drawn on the CPU generator (same seed, same images on every device,
// and the same noise as a diffusers pipeline given a CPU torch.Generator with that seed).
//
//   StableDiffusionModel sd = load_stable_diffusion("v1-5-pruned-emaonly.safetensors", {tokenizer_path});
//   TextToImage request{{"a watercolor fox"}, "blurry", 512, 512, sampler, 1, 0};
//   auto images = text_to_image(sd, request);   // [1, 3, 512, 512] in [-1, 1]
//
// The modules are children "unet", "text_encoder" and "vae" of one module, so LoRA files address their
// layers as unet.<diffusers path> / text_encoder.<transformers path> (kohya: lora_unet_*, lora_te_*).
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/clip_tokenizer.h"
#include "diffusion/clip_text.h"
#include "diffusion/generate.h"
#include "diffusion/unet.h"
#include "diffusion/vae.h"

namespace atelier {

class StableDiffusionImpl : public torch::nn::Module {
 public:
  StableDiffusionImpl(UNet2DConditionModel unet, ClipTextModel text_encoder, AutoencoderKL vae);
  UNet2DConditionModel unet;
  ClipTextModel text_encoder;
  AutoencoderKL vae;
};
TORCH_MODULE(StableDiffusion);

// What the weights do not say, from the folder's scheduler config or the family's defaults.
struct StableDiffusionInfo {
  std::string family;  // "sd1" (CLIP-L text, 768-wide context) or "sd2" (OpenCLIP-H, 1024)
  std::string format;  // "single file (LDM names)" or "diffusers folder"
  Prediction prediction = Prediction::eps;
  std::int32_t pad_id = ClipBPETokenizer::kEndOfText;  // SD1 pads with <|endoftext|>, SD2 with 0
  std::int64_t default_size = 512;                     // pixels: the UNet's sample_size x the VAE's factor
  std::int64_t steps_offset = 1;                       // SD schedulers' "leading" spacing offset
  bool set_alpha_to_one = false;                       // DDIM's final alpha (SD configs: false)
  torch::ScalarType unet_file_dtype = torch::kFloat;   // the UNet weights' dtype in the file
};

struct StableDiffusionModel {
  StableDiffusion model{nullptr};
  std::shared_ptr<const ClipBPETokenizer> tokenizer;
  StableDiffusionInfo info;
  NoiseSchedule schedule = NoiseSchedule::scaled_linear(1000);
};

struct StableDiffusionLoadOptions {
  std::filesystem::path tokenizer;  // CLIP BPE merges (assets/text/bpe_simple_vocab_16e6.txt.gz); a
                                    // diffusers folder's tokenizer/merges.txt is used when present;
                                    // none: the model loads without one (prompts cannot be encoded)
  std::string prediction = "auto";  // auto (the folder's scheduler config; single files: eps), eps or v
  // Single files: what weight shapes cannot tell (GroupNorm groups, head counts of unusual widths, latent
  // scale); SD's values by default.
  UNetConfig unet_base;
  VAEConfig vae_base;
  ClipTextConfig text_base;
};

// A folder holding model_index.json, or a .ckpt, or a .safetensors whose names include the LDM UNet's
// (model.diffusion_model.*): what load_stable_diffusion reads. Reads only the header of a safetensors file.
bool is_stable_diffusion(const std::filesystem::path& path);

// Loads every component strictly (errors name the file and the key, see the component loaders). The
// family comes from the UNet's context width; v-prediction SD2 checkpoints (SD 2.x 768-v) cannot be told
// from their weights: give prediction "v" for them (diffusers folders say it in scheduler_config.json).
StableDiffusionModel load_stable_diffusion(const std::filesystem::path& path, const StableDiffusionLoadOptions& o);

// Stores the UNet's weights in the file's dtype when that is float16 or bfloat16 (half the memory of the
// largest component; the UNet casts them to its input's dtype at use, so it still computes in float32).
// Call it after merging LoRA files, which are added to the weights at full precision.
void keep_file_dtype(StableDiffusionModel& sd);

// Text embeddings [N, 77, D] of `texts` (padded and truncated to 77 tokens), the output of the text
// encoder's last layer minus `clip_skip` after its final LayerNorm.
torch::Tensor encode_prompts(StableDiffusionModel& sd, const std::vector<std::string>& texts,
                             std::int64_t clip_skip = 0);

struct TextToImage {
  std::vector<std::string> prompts;    // one image per prompt (repeat a prompt for more)
  std::string negative_prompt;         // the unconditional text of guidance ("" when empty)
  std::int64_t height = 0, width = 0;  // pixels, multiples of the VAE factor x 2^(UNet blocks - 1); 0: default
  SamplerSettings sampler;             // cfg_scale <= 1: no guidance (SD-Turbo)
  std::int64_t clip_skip = 0;
  std::uint64_t seed = 0;
};

// Images [N, 3, H, W] in [-1, 1] on the CPU. `observe` is called after every sampler step (throw to
// cancel). Errors name the request's field (height/width, prompts).
torch::Tensor text_to_image(StableDiffusionModel& sd, const TextToImage& request, const StepObserver& observe = {});
// The latents before decoding (the sampler's output), for parity checks: [N, 4, H/8, W/8].
torch::Tensor text_to_latents(StableDiffusionModel& sd, const TextToImage& request, const StepObserver& observe = {});

}  // namespace atelier
