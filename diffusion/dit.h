// DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, 2023).
// Ref: facebookresearch/DiT models.py. Parameter paths equal the official checkpoint keys
// (x_embedder.proj, t_embedder.mlp.{0,2}, y_embedder.embedding_table, blocks.N.{attn.qkv, attn.proj,
// mlp.fc1, mlp.fc2, adaLN_modulation.1}, final_layer.{linear, adaLN_modulation.1}, pos_embed), so an
// official state dict loads 1:1. Other dialects (diffusers) are translated in diffusion/dit_keys.cpp.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/config.h"
#include "core/layer_hooks.h"

namespace atelier {

struct DiTConfig {
  std::int64_t input_size = 32;  // latent (or pixel) height = width
  std::int64_t patch_size = 2;
  std::int64_t in_channels = 4;
  std::int64_t hidden_size = 1152;
  std::int64_t depth = 28;
  std::int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  double class_dropout_prob = 0.1;
  std::int64_t num_classes = 1000;
  bool learn_sigma = true;
  // Timestep-embedding frequency denominator is (128 - freq_shift): 0 in the official code, 1 in
  // diffusers' DiTTransformer2DModel (Timesteps(downscale_freq_shift=1)).
  std::int64_t timestep_freq_shift = 0;
  // Atelier extension, off for official checkpoints: a residual 3x3 convolution over the unpatchified
  // output (`final_conv.{weight,bias}`, zero-initialised), which lets neighbouring patches agree at their
  // borders instead of each being drawn apart (U-ViT ends with such a convolution for the same reason).
  bool final_conv = false;

  std::int64_t out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
  std::int64_t num_patches() const { return (input_size / patch_size) * (input_size / patch_size); }

  template <class V>
  void fields(V& v) {
    v("input_size", input_size, "input height = width (latent or pixel)", Range{2, 1024});
    v("patch_size", patch_size, "patch size", Range{1, 64});
    v("in_channels", in_channels, "input channels", Range{1, 64});
    v("hidden_size", hidden_size, "transformer width", Range{8, 8192});
    v("depth", depth, "number of DiT blocks", Range{1, 128});
    v("num_heads", num_heads, "attention heads", Range{1, 128});
    v("mlp_ratio", mlp_ratio, "MLP hidden size / width", Range{0.5, 16});
    v("class_dropout_prob", class_dropout_prob, "label dropout for classifier-free guidance", Range{0, 1});
    v("num_classes", num_classes, "number of classes (the table has one more row: the null class)", Range{1, 1e7});
    v("learn_sigma", learn_sigma, "predict the variance interpolation as well (output 2x channels)");
    v("timestep_freq_shift", timestep_freq_shift, "0 official DiT, 1 diffusers", Range{0, 1});
    v("final_conv", final_conv, "residual 3x3 convolution on the output across patch borders (Atelier only)");
  }
};

// Presets by the paper's names: "DiT-XL/2", "DiT-L/4", "DiT-B/8", "DiT-S/2", ..., plus tiny presets
// that train on a 2-core CPU ("DiT-T/2", "DiT-T/4"). input_size/in_channels/num_classes keep defaults
// (256x256 images -> 32x32x4 latents, 1000 classes) unless the caller changes them.
DiTConfig dit_preset(const std::string& name);
std::vector<std::string> dit_preset_names();

// MAE-style 2D sin-cos positional embedding, [grid*grid, dim] (float64 math, as the reference).
// `base_size` > 0 scales the grid to `base_size` cells (PixArt-style: arange(G) / (G / base_size)),
// used to fine-tune a DiT at a larger resolution than it was trained at.
torch::Tensor sincos_pos_embed_2d(std::int64_t dim, std::int64_t grid, double base_size = 0);
// [N, 256] sinusoidal timestep embedding ([cos, sin]), max period 1e4.
torch::Tensor timestep_embedding(const torch::Tensor& t, std::int64_t dim, std::int64_t freq_shift = 0);

class DiTBlockImpl : public torch::nn::Module {
 public:
  DiTBlockImpl(std::int64_t hidden, std::int64_t heads, double mlp_ratio,
               std::shared_ptr<LayerHooks> hooks = std::make_shared<LayerHooks>());
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& c);  // x [N, T, D], c [N, D]

  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr}, ada{nullptr};
  std::int64_t heads;
  // Optional per-branch scales (DiffFit's gamma); undefined = 1.
  torch::Tensor gamma_attn, gamma_mlp;
  std::shared_ptr<LayerHooks> hooks;  // the DiT's table: every Linear is called through it
};
TORCH_MODULE(DiTBlock);

class DiTImpl : public torch::nn::Module {
 public:
  explicit DiTImpl(const DiTConfig& config);
  // x [N, C, H, W], t [N] (float or int timesteps), y [N] int64 labels (num_classes = null class).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y);
  // Classifier-free guidance over all output channels used for eps: out = uncond + s * (cond - uncond).
  // x [N, C, H, W] is run once with y and once with the null label.
  torch::Tensor forward_with_cfg(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, double scale);
  // Label dropout for CFG training: replaces labels by the null class with probability p.
  torch::Tensor drop_labels(const torch::Tensor& y, const torch::Tensor& uniform) const;
  // Regenerates pos_embed for a new input size (keeps everything else).
  void set_input_size(std::int64_t input_size, double base_grid = 0);
  void initialize_weights();  // adaLN-Zero initialisation of the reference

  const DiTConfig& config() const { return config_; }
  std::int64_t null_class() const { return config_.num_classes; }
  // Replaces the label table by one with `num_classes` + null rows (the adapters' re-targeting).
  void set_label_table(const torch::Tensor& table);
  // Adds a class: `row` ([D] or [1, D]) becomes a label-table row before the null row. Returns its label.
  std::int64_t add_class(const torch::Tensor& row);
  // Additive layer updates (LoRA) on any Linear/Conv2d of this DiT; empty by default.
  LayerHooks& hooks() { return *hooks_; }

  torch::nn::Conv2d x_proj{nullptr};
  torch::nn::Linear t_mlp0{nullptr}, t_mlp2{nullptr};
  torch::nn::Embedding y_table{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear final_linear{nullptr}, final_ada{nullptr};
  torch::nn::Conv2d final_conv{nullptr};  // only with config.final_conv
  torch::Tensor pos_embed;

 private:
  torch::Tensor unpatchify(const torch::Tensor& x) const;  // [N, T, p*p*C] -> [N, C, H, W]
  DiTConfig config_;
  std::shared_ptr<LayerHooks> hooks_ = std::make_shared<LayerHooks>();
};
TORCH_MODULE(DiT);

}  // namespace atelier
