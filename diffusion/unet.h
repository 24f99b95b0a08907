// UNet2DConditionModel: the text-conditioned latent UNet of Stable Diffusion 1.x / 2.x (Rombach et al., 2022).
// Ref: huggingface/diffusers src/diffusers/models/unets/{unet_2d_condition.py, unet_2d_blocks.py},
//      models/{resnet.py, attention.py, attention_processor.py, embeddings.py, activations.py},
//      models/transformers/transformer_2d.py.
// Parameter paths equal diffusers' UNet2DConditionModel state_dict keys (conv_in, time_embedding.linear_1,
// down_blocks.i.resnets.j.conv1, down_blocks.i.attentions.j.transformer_blocks.0.attn1.to_q, mid_block,
// up_blocks, conv_norm_out, conv_out), so a diffusers file loads 1:1. The LDM single-file names
// (model.diffusion_model.input_blocks...) are translated by the table in diffusion/unet_keys.cpp.
//
//   UNet2DConditionModel unet = load_unet("v1-5-pruned-emaonly.safetensors");   // or unet/…safetensors
//   auto eps = unet->forward(latents, t, context);  // [N, 4, h, w], [N] or scalar, [N, 77, 768] -> [N, 4, h, w]
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/layer_hooks.h"
#include "core/tensor_map.h"

namespace atelier {

// The subset of diffusers' UNet2DConditionModel config that SD 1.x / 2.x / Turbo / LCM UNets use.
//
// Heads: diffusers 0.42.1 names the per-block head COUNT `attention_head_dim` (a legacy misnomer kept for
// config compatibility; UNet2DConditionModel.__init__ sets num_attention_heads = attention_head_dim and
// raises when num_attention_heads is given). The field keeps diffusers' name and meaning: one value for all
// blocks (SD1.5: 8 heads, so head dims 40/80/160) or one per down block (SD2.x: [5, 10, 20, 20], head dim
// 64); the mid block uses the last entry, up block i the entry of down block n-1-i. A block with C channels
// and h heads attends with head dim C/h.
struct UNetConfig {
  std::int64_t sample_size = 64;  // latent side the model was trained at (informational)
  std::int64_t in_channels = 4;
  std::int64_t out_channels = 4;
  std::vector<std::int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::int64_t layers_per_block = 2;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "DownBlock2D"};
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  std::vector<std::int64_t> attention_head_dim = {8};  // head COUNTS (see above): 1 or one per block
  std::int64_t cross_attention_dim = 768;
  bool use_linear_projection = false;  // SD2: Linear proj_in/proj_out; SD1: 1x1 Conv2d
  std::int64_t transformer_layers_per_block = 1;
  std::int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;  // resnets and conv_norm_out (attention GroupNorm 1e-6, LayerNorms 1e-5 as diffusers)
  bool flip_sin_to_cos = true;
  std::int64_t freq_shift = 0;
  std::int64_t time_cond_proj_dim = 0;  // LCM's guidance embedding width (time_embedding.cond_proj); 0: none

  std::int64_t blocks() const { return static_cast<std::int64_t>(block_out_channels.size()); }
  std::int64_t heads(std::int64_t down_block) const;  // head count of down block i (mid: blocks() - 1)
  bool down_has_attention(std::int64_t i) const { return down_block_types.at(i) == "CrossAttnDownBlock2D"; }
  bool up_has_attention(std::int64_t i) const { return up_block_types.at(i) == "CrossAttnUpBlock2D"; }
  // Error naming the field when the config cannot describe a model (lengths, types, group and head
  // divisibility).
  void validate() const;

  template <class V>
  void fields(V& v) {
    v("sample_size", sample_size, "latent side the model was trained at", Range{1, 4096});
    v("in_channels", in_channels, "latent channels in", Range{1, 256});
    v("out_channels", out_channels, "channels out", Range{1, 256});
    v("block_out_channels", block_out_channels, "channels of each down block (up blocks reversed)", Range{1, 8192});
    v("layers_per_block", layers_per_block, "resnets per down block (up blocks have one more)", Range{1, 16});
    v("down_block_types", down_block_types, "CrossAttnDownBlock2D or DownBlock2D per block");
    v("up_block_types", up_block_types, "UpBlock2D or CrossAttnUpBlock2D per block");
    v("attention_head_dim", attention_head_dim, "attention HEAD COUNT, one or one per block (diffusers' name)",
      Range{1, 1024});
    v("cross_attention_dim", cross_attention_dim, "width of encoder_hidden_states", Range{1, 16384});
    v("use_linear_projection", use_linear_projection, "Linear proj_in/proj_out (SD2) instead of 1x1 convs (SD1)");
    v("transformer_layers_per_block", transformer_layers_per_block, "transformer blocks per attention", Range{1, 64});
    v("norm_num_groups", norm_num_groups, "GroupNorm groups", Range{1, 1024});
    v("norm_eps", norm_eps, "GroupNorm eps of resnets and conv_norm_out", Range{0, 1});
    v("flip_sin_to_cos", flip_sin_to_cos, "timestep embedding [cos, sin] (true) or [sin, cos]");
    v("freq_shift", freq_shift, "timestep embedding frequency shift", Range{0, 1});
    v("time_cond_proj_dim", time_cond_proj_dim, "LCM guidance embedding width (0: none)", Range{0, 65536});
  }
};

// "sd15" (SD-1.5), "sd21" (SD-2.1 768-v: head dim 64, 1024-wide context, linear projections, 96x96
// latents) and "sd-turbo" (SD-2.1 base architecture, 64x64 latents).
UNetConfig unet_preset(const std::string& name);
std::vector<std::string> unet_preset_names();

// A diffusers UNet2DConditionModel config.json (already parsed). Keys that change the network beyond
// UNetConfig (class/addition embeddings, SDXL lists, other block or time-embedding types, ...) are errors
// naming the key when they hold anything but diffusers' default; keys that only affect training or
// numerics (dropout, upcast_attention, _diffusers_version, ...) are ignored. `source` names the file.
UNetConfig unet_config_from_diffusers(const json& j, const std::string& source);

// ResnetBlock2D with a time embedding: h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb));
// out = shortcut(x) + conv2(silu(norm2(h))); conv_shortcut (1x1) when channels change.
class UNetResnetBlockImpl : public torch::nn::Module {
 public:
  UNetResnetBlockImpl(std::int64_t in, std::int64_t out, std::int64_t temb, std::int64_t groups, double eps);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb);  // [N, in, H, W], [N, temb]

  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
};
TORCH_MODULE(UNetResnetBlock);

// Multi-head attention (diffusers Attention): to_q/to_k/to_v without bias, to_out.0 with bias. Self-attention
// when no context is given.
class UNetAttentionImpl : public torch::nn::Module {
 public:
  UNetAttentionImpl(std::int64_t dim, std::int64_t context_dim, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});  // [N, T, dim] -> same

  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};  // to_out is "to_out.0"
  std::int64_t heads;
};
TORCH_MODULE(UNetAttention);

// BasicTransformerBlock: x += attn1(norm1(x)); x += attn2(norm2(x), context); x += ff(norm3(x)), with
// ff = Linear(4D -> D)(GEGLU(x)) as ff.net.0.proj [8D, D] and ff.net.2 [D, 4D].
//
// DiffFit scales: add_gamma("attn1" | "attn2" | "ff") registers a per-channel scale gamma_<branch> [D] (ones)
// on that residual branch, x += gamma * branch(x); not part of a diffusers state dict (added for training).
class UNetTransformerBlockImpl : public torch::nn::Module {
 public:
  UNetTransformerBlockImpl(std::int64_t dim, std::int64_t context_dim, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);  // [N, T, D]
  // Registers gamma_<branch> (ones on the block's device) and returns it; Error for another branch name.
  torch::Tensor add_gamma(const std::string& branch);

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  UNetAttention attn1{nullptr}, attn2{nullptr};
  torch::nn::Linear ff_in{nullptr}, ff_out{nullptr};  // ff.net.0.proj, ff.net.2
  torch::Tensor gamma_attn1, gamma_attn2, gamma_ff;   // undefined unless added
};
TORCH_MODULE(UNetTransformerBlock);

// Transformer2DModel over the H*W positions, residual: GroupNorm (eps 1e-6) -> proj_in (1x1 conv, or
// Linear after flattening) -> transformer blocks -> proj_out -> + x.
class UNetSpatialTransformerImpl : public torch::nn::Module {
 public:
  UNetSpatialTransformerImpl(std::int64_t channels, const UNetConfig& c, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);  // [N, C, H, W], [N, L, cross]

  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};      // SD1 ("proj_in", "proj_out")
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};  // SD2 (same names)
  torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(UNetSpatialTransformer);

// CrossAttnDownBlock2D / DownBlock2D: `layers` resnets (each followed by an attention in the cross-attention
// kind), then a 3x3 stride-2 conv (downsamplers.0.conv) unless it is the last block. Appends every
// resnet/attention output and the downsampled map to `skips`.
class UNetDownBlockImpl : public torch::nn::Module {
 public:
  UNetDownBlockImpl(const UNetConfig& c, std::int64_t i);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};  // attentions undefined in DownBlock2D
  torch::nn::Conv2d downsample{nullptr};                        // downsamplers.0.conv; undefined in the last block
};
TORCH_MODULE(UNetDownBlock);

// UNetMidBlock2DCrossAttn: resnets.0 -> attentions.0 -> resnets.1.
class UNetMidBlockImpl : public torch::nn::Module {
 public:
  explicit UNetMidBlockImpl(const UNetConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb, const torch::Tensor& context);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(UNetMidBlock);

// UpBlock2D / CrossAttnUpBlock2D: `layers + 1` resnets over [x, skip] concatenated on channels (skips taken
// from the back of `skips`), each followed by an attention in the cross-attention kind, then nearest
// upsampling to the next skip's size and a 3x3 conv (upsamplers.0.conv) unless it is the last block.
class UNetUpBlockImpl : public torch::nn::Module {
 public:
  UNetUpBlockImpl(const UNetConfig& c, std::int64_t i);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                        std::vector<torch::Tensor>& skips);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
  torch::nn::Conv2d upsample{nullptr};  // upsamplers.0.conv; undefined in the last block
};
TORCH_MODULE(UNetUpBlock);

class UNet2DConditionModelImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionModelImpl(const UNetConfig& config);

  // Computes in the sample's dtype; weights stored in another dtype are cast at use, so a model moved to
  // fp16 (half the memory) and given fp32 inputs runs in fp32.
  // sample [N, in, H, W] (any H, W), timestep [N], [1] or a scalar tensor (integer or floating; cast to
  // float32 as diffusers), encoder_hidden_states [N, L, cross_attention_dim]; timestep_cond [N,
  // time_cond_proj_dim] (LCM guidance embedding) only for configs with time_cond_proj_dim. -> [N, out, H, W].
  torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                        const torch::Tensor& encoder_hidden_states, const torch::Tensor& timestep_cond = {});
  // [N] timesteps -> [N, 4 * block_out_channels[0]] (time_proj + time_embedding), computed in `dtype`.
  torch::Tensor time_embed(const torch::Tensor& timesteps, const torch::Tensor& timestep_cond = {},
                           torch::ScalarType dtype = torch::kFloat);

  const UNetConfig& config() const { return config_; }

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::Linear time_linear_1{nullptr}, time_linear_2{nullptr}, time_cond_proj{nullptr};  // time_embedding.*
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  UNetMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  // Updates attached to its Linear / Conv2d layers (LoRA while it trains, or applied unmerged): every
  // layer call of a forward adds them.
  LayerHooks hooks;

 private:
  UNetConfig config_;
};
TORCH_MODULE(UNet2DConditionModel);

// ---- weight files (diffusion/unet_keys.cpp) ----

enum class UNetKeyDialect {
  Diffusers,  // UNet2DConditionModel state_dict names
  LDM,        // CompVis/Stability single files: model.diffusion_model.input_blocks.{k}.0.in_layers.0, ...
};
const char* dialect_name(UNetKeyDialect d);

// The UNet's tensors of a file renamed to diffusers keys. A torch .ckpt's "state_dict." is stripped first;
// then, when keys start with "model.diffusion_model.", only those are taken (a full SD checkpoint's VAE,
// text encoder and EMA copies are dropped) and translated by the LDM table; LDM names without the prefix
// (input_blocks., middle_block., ...) are translated too. Other keys are kept as they are, so strict
// loading reports them as unexpected. `origin` (optional) receives diffusers name -> the file's name for
// every renamed key.
TensorMap unet_tensors_to_diffusers(const TensorMap& tensors, UNetKeyDialect* detected = nullptr,
                                    std::map<std::string, std::string>* origin = nullptr);

// Infers the config from diffusers-named weights: in/out channels, block_out_channels, layers_per_block,
// block types (attentions present), cross_attention_dim (attn2.to_k), use_linear_projection (proj_in
// rank), transformer_layers_per_block and time_cond_proj_dim. Head counts cannot be read from shapes: a
// 768-wide context with conv projections is SD1 (8 heads per block), a 1024-wide context with linear
// projections is SD2 (head dim 64: channels / 64 heads); otherwise base.attention_head_dim is kept.
// sample_size, norm_num_groups, norm_eps and the timestep embedding settings come from `base` (SD's by
// default). Error naming the key when a required one is missing or has an impossible shape.
UNetConfig detect_unet_config(const TensorMap& diffusers_tensors, const UNetConfig& base = {});

// Loads weights (either dialect) into `unet`, strictly: every missing, unexpected and wrong-shape key in
// one Error naming `source` (with the file's own name next to translated keys).
void load_unet_state(UNet2DConditionModelImpl& unet, const TensorMap& tensors, const std::string& source);

struct UNetLoadOptions {
  std::optional<UNetConfig> config;  // use this config; unset: config.json beside the file, else detected
  UNetConfig base;                   // what shapes cannot tell, for a detected config (detect_unet_config)
};

// What load_unet read.
struct UNetFileInfo {
  UNetKeyDialect dialect = UNetKeyDialect::Diffusers;
  UNetConfig config;
  std::string config_source;  // "options", the config.json path, or "detected from shapes (SD1 heads)" etc.
};

// Loads a UNet from a diffusers UNet file (.safetensors/.bin; its config.json beside it is used) or an SD
// single file (.safetensors or .ckpt: torch zip read by core's restricted unpickler; only
// model.diffusion_model.* is taken). Loading is strict (see load_unet_state). Returns the model in eval mode.
UNet2DConditionModel load_unet(const std::filesystem::path& path, const UNetLoadOptions& options = {},
                               UNetFileInfo* info = nullptr);

}  // namespace atelier
