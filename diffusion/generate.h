// Class-conditional generation with a DiT: the sampler choice, classifier-free guidance folded into
// the denoiser callback, and the `sample` job (labelled grid + metrics).
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/rng.h"
#include "diffusion/dit.h"
#include "diffusion/model_file.h"
#include "samplers/samplers.h"

namespace atelier {

struct SamplerSettings {
  std::string sampler = "dpmpp_2m";
  std::int64_t steps = 50;
  double cfg_scale = 3.0;
  double eta = 0.0;
  std::string spacing = "auto";

  template <class V>
  void fields(V& v) {
    v("sampler", sampler, "sampler", Choices{"ddpm", "ddim", "euler", "euler_a", "dpmpp_2m", "lcm"});
    v("steps", steps, "sampling steps", Range{1, 1000});
    v("cfg_scale", cfg_scale, "classifier-free guidance scale (1: off)", Range{0, 100});
    v("eta", eta, "DDIM eta (0: deterministic)", Range{0, 1});
    v("spacing", spacing, "timestep spacing (auto: the sampler's diffusers default)",
      Choices{"auto", "leading", "trailing", "linspace"});
  }
};

// Image-to-image start (SDEdit, Meng et al. 2022): `images` [N, C, H, W] noised to the first kept timestep
// of the sampler's list, which keeps its last int(steps * strength) steps (diffusers' img2img rule).
struct ImageInit {
  torch::Tensor images;
  double strength = 0.6;
};

// What a sampler needs to know of the model behind a denoiser.
struct SamplerModel {
  const NoiseSchedule& schedule;
  Prediction prediction = Prediction::eps;
  bool learned_sigma = false;     // the output is [prediction | variance] (DiT): DDPM uses the learned range
  bool dit_respacing = false;     // DDPM with spacing auto: DiT's respacing (else diffusers' leading spacing)
  std::int64_t steps_offset = 0;  // added to "leading" timesteps (SD schedulers: 1)
  bool set_alpha_to_one = true;   // DDIM's abar after the last step: 1, or abar_0 (SD schedulers: false)
};
// The sampler loop `s` names over any denoiser (guidance folded in by the caller), from the standard-normal
// start x [N, C, H, W] (scaled here for the Euler family). With `init`, an image-to-image start (SDEdit:
// the images noised to the first kept timestep; ddpm, ddim and dpmpp_2m). Error naming an unknown sampler.
torch::Tensor run_sampler(const SamplerModel& model, const SamplerSettings& s, const Denoiser& denoise, torch::Tensor x,
                          Rng& rng, const StepObserver& observe = {}, const ImageInit* init = nullptr);
// Generates one image per label. labels [N] int64 in the model's class space; returns [N, C, H, W].
// The denoiser runs the conditional and null-label passes as one batch when cfg_scale != 1. With `init`,
// an edit of init->images instead (ddpm, ddim and dpmpp_2m; strength 0 returns them unchanged).
torch::Tensor generate(DiT& model, const DiTModelInfo& info, const torch::Tensor& labels, const SamplerSettings& s,
                       Rng& rng, const StepObserver& observe = {}, const ImageInit* init = nullptr);

// `per_class` samples of every class label (the default sampler, DPM++ 2M; fixed noise from `seed`), as a labelled PNG
// grid at `path`; returns the images [K * per_class, C, H, W] on the CPU. Checks `cancel` at every sampler step (throws
// Cancelled); non-finite samples are an Error and nothing is written.
torch::Tensor save_class_grid(DiT& model, const DiTModelInfo& info, std::int64_t per_class, std::int64_t steps,
                              double cfg_scale, std::uint64_t seed, const std::filesystem::path& path,
                              const std::string& title, const CancelToken* cancel = nullptr);
// The same with any sampler.
torch::Tensor save_class_grid(DiT& model, const DiTModelInfo& info, std::int64_t per_class,
                              const SamplerSettings& sampler, std::uint64_t seed, const std::filesystem::path& path,
                              const std::string& title, const CancelToken* cancel = nullptr);
// A sampler observer that throws Cancelled at the next step once `cancel` is requested (null: never).
StepObserver cancel_observer(const CancelToken* cancel);
// `samples` unchanged when every value is finite; else Error naming `what`.
torch::Tensor checked_finite(const torch::Tensor& samples, const std::string& what);

struct SampleConfig {
  std::string model = "assets/models/dit_shapes.safetensors";
  std::vector<std::string> prompts;  // text-to-image models (Stable Diffusion)
  std::string negative_prompt;
  std::int64_t width = 0, height = 0;
  std::int64_t clip_skip = 0;
  std::string prediction = "auto";
  std::string tokenizer = "assets/text/bpe_simple_vocab_16e6.txt.gz";
  std::vector<std::string> adapters;  // adapter files applied to the model (needs a ModelLoader)
  std::vector<double> adapter_weights;
  std::vector<double> block_weights;
  std::string vae;  // decodes latent models (e.g. diffusers sd-vae-ft-mse) into images
  std::vector<std::string> classes;
  std::int64_t per_class = 8;
  SamplerSettings sampler;
  std::int64_t seed = 0;
  std::string probe = "assets/models/probe.safetensors";
  std::int64_t reference_samples = 512;
  std::string output = "samples.png";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("model", model,
      "model: a DiT file (Atelier's, an official DiT .pt, diffusers weights) or Stable Diffusion (a single "
      ".safetensors/.ckpt checkpoint or a diffusers folder)",
      Input::Model);
    v("prompts", prompts, "text-to-image models: one prompt per grid row (per_class images each)", Input::Text);
    v("negative_prompt", negative_prompt, "text-to-image models: what guidance steers away from", Input::Text);
    v("adapters", adapters, "adapter files applied to the model at load time", Input::Adapters);
    v("adapter_weights", adapter_weights, "one weight per adapter (empty: 1 each)", PerItem{"adapters"},
      Range{-100, 100});
    v("block_weights", block_weights, "LoRA adapters: one weight per DiT block (empty: 1 each)", Range{-100, 100});
    v("vae", vae, "VAE that decodes a latent model's samples (AutoencoderKL: diffusers, old or LDM names)",
      Input::File);
    v("classes", classes, "class-conditional models: class names to draw (empty: every class of the model)",
      Input::Classes);
    v("per_class", per_class, "images per class or prompt (one grid row each)", Range{1, 4096});
    sampler.fields(v);
    v("seed", seed, "seed of the initial noise", Range{0, 9e15});
    v("width", width, "text-to-image: image width in pixels (0: the model's size)", Range{0, 8192});
    v("height", height, "text-to-image: image height in pixels (0: the model's size)", Range{0, 8192});
    v("clip_skip", clip_skip, "text-to-image: text encoder layers to skip from the end (diffusers' clip_skip)",
      Range{0, 64});
    v("prediction", prediction,
      "text-to-image: what the UNet predicts (auto: the folder's scheduler config, else eps; SD 2.x 768-v "
      "checkpoints need v)",
      Choices{"auto", "eps", "v"});
    v("tokenizer", tokenizer, "text-to-image: CLIP BPE vocabulary (a diffusers folder's own is used first)",
      Input::File);
    v("probe", probe, "Shapes probe for metrics of Shapes models (empty: no metrics)", Input::File);
    v("reference_samples", reference_samples, "real test-split images for FD-shapes", Range{16, 1e6});
    v("output", output, "grid file written in the run folder", OutputFile{".png"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};
// A one-line description of a sample job's grid: model + adapters, sampler, steps, cfg, seed.
std::string sample_label(const SampleConfig& config);

// Loads the model named by config.model with config.adapters applied (the adapters layer provides it).
using ModelLoader = std::function<DiT(const SampleConfig& config, DiTModelInfo* info)>;
struct StableDiffusionModel;
// Applies config.adapters (LoRA files) to a loaded Stable Diffusion model (the adapters layer provides it).
using SDAdapterApplier = std::function<void(StableDiffusionModel& sd, const SampleConfig& config)>;
// A DiT: a labelled grid of per_class images per class (+ Shapes metrics). Stable Diffusion: a grid of
// per_class images per prompt. Without a loader / applier, adapters are refused with an Error naming the field.
void sample_job(const SampleConfig& config, JobContext& ctx, const ModelLoader& loader = {},
                const SDAdapterApplier& sd_adapters = {});

}  // namespace atelier
