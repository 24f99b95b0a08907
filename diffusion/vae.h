// AutoencoderKL: the KL-regularised autoencoder of Latent Diffusion / Stable Diffusion (Rombach et al., 2022).
// Ref: huggingface/diffusers src/diffusers/models/autoencoders/{autoencoder_kl.py, vae.py},
//      src/diffusers/models/{resnet.py, attention_processor.py, unets/unet_2d_blocks.py}.
// Parameter paths equal diffusers' AutoencoderKL state_dict keys (encoder.down_blocks.i.resnets.j.conv1,
// encoder.mid_block.attentions.0.to_q, decoder.up_blocks.i.upsamplers.0.conv, quant_conv, ...), so a
// diffusers file loads 1:1. The older diffusers attention names and the LDM/CompVis names are translated
// by the tables in diffusion/vae_keys.cpp (load_vae_state accepts all three).
//
//   AutoencoderKL vae(vae_preset("sd"));
//   load_vae_state(*vae, load_tensor_file(path).tensors, path.string());
//   auto z = vae->to_latent(images, rng);   // [N, 3, H, W] in [-1, 1] -> [N, 4, H/8, W/8], scaled
//   auto x = vae->from_latent(z);
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor_map.h"

namespace atelier {

class Rng;

struct VAEConfig {
  std::int64_t in_channels = 3;
  std::int64_t out_channels = 3;
  std::int64_t latent_channels = 4;
  std::vector<std::int64_t> block_out_channels = {128, 256, 512, 512};
  std::int64_t layers_per_block = 2;
  std::int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  double shift_factor = 0;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;

  // Spatial downsampling factor: every down block but the last halves H and W.
  std::int64_t downscale() const { return std::int64_t{1} << (block_out_channels.size() - 1); }

  template <class V>
  void fields(V& v) {
    v("in_channels", in_channels, "image channels", Range{1, 64});
    v("out_channels", out_channels, "decoded image channels", Range{1, 64});
    v("latent_channels", latent_channels, "latent channels", Range{1, 256});
    v("block_out_channels", block_out_channels, "channels of each encoder down block (decoder reversed)",
      Range{1, 8192});
    v("layers_per_block", layers_per_block, "resnets per encoder block (decoder blocks have one more)", Range{1, 16});
    v("norm_num_groups", norm_num_groups, "GroupNorm groups (must divide every block's channels)", Range{1, 1024});
    v("scaling_factor", scaling_factor, "latent scale: to_latent = scaling_factor * (z - shift_factor)",
      Range{1e-6, 1e6});
    v("shift_factor", shift_factor, "latent shift (0 for SD1/2/XL)");
    v("use_quant_conv", use_quant_conv, "1x1 conv on the encoder moments");
    v("use_post_quant_conv", use_post_quant_conv, "1x1 conv on the latent before the decoder");
  }
};

// "sd" (SD1/2 VAE, also the shapes of SDXL's), "sdxl" (scale 0.13025) and tiny presets for the Shapes
// world: "shapes-f4" (32x32x3 -> 8x8x4, [32, 64, 64], 8 groups) and "shapes-f2" (-> 16x16x4, [32, 64]).
VAEConfig vae_preset(const std::string& name);
std::vector<std::string> vae_preset_names();

// Posterior q(z | x) of the encoder: per-element Gaussian. mean/logvar [N, latent, h, w]; logvar is
// clamped to [-30, 20] as the reference.
struct DiagonalGaussian {
  torch::Tensor mean, logvar;

  torch::Tensor std() const { return torch::exp(0.5 * logvar); }
  torch::Tensor sample(Rng& rng) const;  // mean + std * eps, eps drawn from `rng`
  torch::Tensor mode() const { return mean; }
  torch::Tensor kl() const;  // [N] KL(q || N(0, I)) summed over latent elements
};

// ResnetBlock2D without time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x)))))), with a 1x1
// conv_shortcut on x when channels change.
class VAEResnetBlockImpl : public torch::nn::Module {
 public:
  VAEResnetBlockImpl(std::int64_t in, std::int64_t out, std::int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);  // [N, in, H, W] -> [N, out, H, W]

  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(VAEResnetBlock);

// Single-head self-attention over the H*W positions, residual (Attention with a GroupNorm, heads 1).
class VAEAttentionImpl : public torch::nn::Module {
 public:
  VAEAttentionImpl(std::int64_t channels, std::int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);  // [N, C, H, W]

  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};  // to_out is "to_out.0"
};
TORCH_MODULE(VAEAttention);

// UNetMidBlock2D: resnets.0 -> attentions.0 -> resnets.1.
class VAEMidBlockImpl : public torch::nn::Module {
 public:
  VAEMidBlockImpl(std::int64_t channels, std::int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VAEMidBlock);

// DownEncoderBlock2D (`up` false) or UpDecoderBlock2D (`up` true): `layers` resnets, then an optional
// resampler registered as downsamplers.0.conv (pad (0,1,0,1), 3x3 stride 2, no padding) or
// upsamplers.0.conv (nearest x2, 3x3 padding 1).
class VAEBlockImpl : public torch::nn::Module {
 public:
  VAEBlockImpl(std::int64_t in, std::int64_t out, std::int64_t layers, std::int64_t groups, bool up, bool resample);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::ModuleList resnets{nullptr};
  torch::nn::Conv2d resample_conv{nullptr};  // undefined when the block keeps the resolution
  bool up;
};
TORCH_MODULE(VAEBlock);

class VAEEncoderImpl : public torch::nn::Module {
 public:
  explicit VAEEncoderImpl(const VAEConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [N, in, H, W] -> [N, 2*latent, H/f, W/f]

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VAEEncoder);

class VAEDecoderImpl : public torch::nn::Module {
 public:
  explicit VAEDecoderImpl(const VAEConfig& c);
  torch::Tensor forward(const torch::Tensor& z);  // [N, latent, h, w] -> [N, out, h*f, w*f]

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(VAEDecoder);

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const VAEConfig& config);

  // x [N, in, H, W] in [-1, 1], H and W multiples of config().downscale().
  DiagonalGaussian encode(const torch::Tensor& x);
  // z [N, latent, h, w] (unscaled) -> [N, out, h*f, w*f].
  torch::Tensor decode(const torch::Tensor& z);
  // Diffusion-space latents: scaling_factor * (z - shift_factor), z sampled from the posterior with
  // `rng`, or its mode without.
  torch::Tensor to_latent(const torch::Tensor& x, Rng& rng);
  torch::Tensor to_latent(const torch::Tensor& x);
  // decode(z / scaling_factor + shift_factor).
  torch::Tensor from_latent(const torch::Tensor& z);

  const VAEConfig& config() const { return config_; }

  VAEEncoder encoder{nullptr};
  VAEDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};  // undefined when disabled

 private:
  VAEConfig config_;
};
TORCH_MODULE(AutoencoderKL);

// Key dialects of AutoencoderKL weights (tables in diffusion/vae_keys.cpp).
enum class VAEKeyDialect {
  Diffusers,     // current diffusers names (to_q/to_k/to_v/to_out.0)
  DiffusersOld,  // diffusers before 0.14: attentions.0.{query,key,value,proj_attn}
  LDM,           // CompVis/LDM and SD single-file checkpoints: encoder.down.i.block.j, mid.attn_1.q, ...
};
const char* dialect_name(VAEKeyDialect d);

// The VAE's tensors of a file in any dialect, renamed to diffusers keys: a "first_stage_model." / "vae."
// prefix (full SD checkpoints; "state_dict." of .ckpt files first) selects the VAE's tensors and is
// stripped, LDM attention 1x1 conv weights [C, C, 1, 1] become linear [C, C]. LDM files may hold the
// training loss (loss.*, discriminator and LPIPS) next to the VAE: those tensors are dropped. Names
// outside the dialect's table are kept as they are, so strict loading reports them as unexpected.
TensorMap vae_tensors_to_diffusers(const TensorMap& tensors, VAEKeyDialect* detected = nullptr);

// Loads weights in any dialect into `vae`, strictly: every missing, unexpected and wrong-shape key is
// reported at once in one Error naming `source` (e.g. the file).
void load_vae_state(AutoencoderKLImpl& vae, const TensorMap& tensors, const std::string& source);

// Infers channels, block_out_channels, layers_per_block, latent_channels and the quant convs from weight
// shapes (any dialect). What shapes cannot tell (norm_num_groups, scaling/shift factors) comes from `base`.
VAEConfig detect_vae_config(const TensorMap& tensors, const VAEConfig& base = {});

// Reads a safetensors or torch checkpoint file, detects the config (see detect_vae_config) and loads it.
// The settings shapes cannot tell come from the file's Atelier "vae.config" metadata, else from a
// diffusers config.json beside it (so the SDXL VAE gets its 0.13025 scale), else from `base`.
AutoencoderKL load_vae(const std::filesystem::path& path, const VAEConfig& base = {});

}  // namespace atelier
