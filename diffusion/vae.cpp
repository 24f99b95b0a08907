// Ref: huggingface/diffusers@v0.42.1 src/diffusers/models/autoencoders/{autoencoder_kl.py, vae.py}
// (AutoencoderKL, Encoder, Decoder, DiagonalGaussianDistribution), models/resnet.py (ResnetBlock2D),
// models/downsampling.py + upsampling.py, models/attention_processor.py (Attention, AttnProcessor2_0),
// models/unets/unet_2d_blocks.py (UNetMidBlock2D, DownEncoderBlock2D, UpDecoderBlock2D).
#include "diffusion/vae.h"

#include <torch/version.h>

#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor_io.h"

namespace atelier {
namespace F = torch::nn::functional;
namespace nn = torch::nn;

namespace {
constexpr double kNormEps = 1e-6;

nn::GroupNorm group_norm_layer(std::int64_t groups, std::int64_t channels) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(kNormEps));
}

nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride = 1,
                std::int64_t padding = 0) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}
}  // namespace

VAEConfig vae_preset(const std::string& name) {
  VAEConfig c;
  if (name == "sd") return c;
  if (name == "sdxl") {
    c.scaling_factor = 0.13025;
    return c;
  }
  if (name == "shapes-f4") {
    c.block_out_channels = {32, 64, 64};
    c.layers_per_block = 1;
    c.norm_num_groups = 8;
    return c;
  }
  std::string list;
  for (const auto& n : vae_preset_names()) list += (list.empty() ? "" : ", ") + n;
  fail("unknown VAE preset '", name, "' (known: ", list, ")");
}

std::vector<std::string> vae_preset_names() {
  return {"sd", "sdxl", "shapes-f4"};
}

torch::Tensor DiagonalGaussian::sample(Rng& rng) const {
  return mean + std() * rng.randn(mean.sizes(), mean.options());
}

torch::Tensor DiagonalGaussian::kl() const {
  return 0.5 * (mean.square() + torch::exp(logvar) - 1.0 - logvar).sum({1, 2, 3});
}

VAEResnetBlockImpl::VAEResnetBlockImpl(std::int64_t in, std::int64_t out, std::int64_t groups) {
  norm1 = register_module("norm1", group_norm_layer(groups, in));
  conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
  norm2 = register_module("norm2", group_norm_layer(groups, out));
  conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
  if (in != out) conv_shortcut = register_module("conv_shortcut", conv(in, out, 1));
}

torch::Tensor VAEResnetBlockImpl::forward(const torch::Tensor& x) {
  auto h = conv1->forward(torch::silu(norm1->forward(x)));
  h = conv2->forward(torch::silu(norm2->forward(h)));
  return (conv_shortcut ? conv_shortcut->forward(x) : x) + h;
}

VAEAttentionImpl::VAEAttentionImpl(std::int64_t channels, std::int64_t groups) {
  group_norm = register_module("group_norm", group_norm_layer(groups, channels));
  to_q = register_module("to_q", nn::Linear(channels, channels));
  to_k = register_module("to_k", nn::Linear(channels, channels));
  to_v = register_module("to_v", nn::Linear(channels, channels));
  auto out = register_module("to_out", nn::ModuleList());
  to_out = nn::Linear(channels, channels);
  out->push_back(to_out);
}

torch::Tensor VAEAttentionImpl::forward(const torch::Tensor& x) {
  const auto n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  auto tokens = group_norm->forward(x).view({n, c, h * w}).transpose(1, 2);  // [N, HW, C]
  auto q = to_q->forward(tokens).unsqueeze(1), k = to_k->forward(tokens).unsqueeze(1),
       v = to_v->forward(tokens).unsqueeze(1);  // [N, 1, HW, C]
  auto a = at::scaled_dot_product_attention(q, k, v);
  a = to_out->forward(a.squeeze(1));                   // [N, HW, C]
  return x + a.transpose(1, 2).reshape({n, c, h, w});  // rescale_output_factor 1
}

VAEMidBlockImpl::VAEMidBlockImpl(std::int64_t channels, std::int64_t groups) {
  resnets = register_module("resnets", nn::ModuleList());
  attentions = register_module("attentions", nn::ModuleList());
  resnets->push_back(VAEResnetBlock(channels, channels, groups));
  attentions->push_back(VAEAttention(channels, groups));
  resnets->push_back(VAEResnetBlock(channels, channels, groups));
}

torch::Tensor VAEMidBlockImpl::forward(const torch::Tensor& x) {
  auto h = resnets->at<VAEResnetBlockImpl>(0).forward(x);
  h = attentions->at<VAEAttentionImpl>(0).forward(h);
  return resnets->at<VAEResnetBlockImpl>(1).forward(h);
}

VAEBlockImpl::VAEBlockImpl(std::int64_t in, std::int64_t out, std::int64_t layers, std::int64_t groups, bool is_up,
                           bool resample)
    : up(is_up) {
  resnets = register_module("resnets", nn::ModuleList());
  for (std::int64_t j = 0; j < layers; ++j) resnets->push_back(VAEResnetBlock(j == 0 ? in : out, out, groups));
  if (!resample) return;
  auto samplers = register_module(up ? "upsamplers" : "downsamplers", nn::ModuleList());
  auto holder = std::make_shared<nn::Module>();
  resample_conv = holder->register_module("conv", up ? conv(out, out, 3, 1, 1) : conv(out, out, 3, 2, 0));
  samplers->push_back(holder);
}

torch::Tensor VAEBlockImpl::forward(const torch::Tensor& x) {
  auto h = x;
  for (const auto& r : *resnets) h = r->as<VAEResnetBlockImpl>()->forward(h);
  if (!resample_conv) return h;
  if (up) {
    h = F::interpolate(h,
                       F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  } else {
    h = F::pad(h, F::PadFuncOptions({0, 1, 0, 1}));  // right and bottom only
  }
  return resample_conv->forward(h);
}

VAEEncoderImpl::VAEEncoderImpl(const VAEConfig& c) {
  const auto& ch = c.block_out_channels;
  const auto blocks = static_cast<std::int64_t>(ch.size());
  conv_in = register_module("conv_in", conv(c.in_channels, ch[0], 3, 1, 1));
  down_blocks = register_module("down_blocks", nn::ModuleList());
  for (std::int64_t i = 0; i < blocks; ++i) {
    down_blocks->push_back(VAEBlock(ch[i > 0 ? i - 1 : 0], ch[i], c.layers_per_block, c.norm_num_groups,
                                    /*up=*/false, /*resample=*/i + 1 < blocks));
  }
  mid_block = register_module("mid_block", VAEMidBlock(ch.back(), c.norm_num_groups));
  conv_norm_out = register_module("conv_norm_out", group_norm_layer(c.norm_num_groups, ch.back()));
  conv_out = register_module("conv_out", conv(ch.back(), 2 * c.latent_channels, 3, 1, 1));
}

torch::Tensor VAEEncoderImpl::forward(const torch::Tensor& x) {
  auto h = conv_in->forward(x);
  for (const auto& b : *down_blocks) h = b->as<VAEBlockImpl>()->forward(h);
  h = mid_block->forward(h);
  return conv_out->forward(torch::silu(conv_norm_out->forward(h)));
}

VAEDecoderImpl::VAEDecoderImpl(const VAEConfig& c) {
  const std::vector<std::int64_t> ch(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  const auto blocks = static_cast<std::int64_t>(ch.size());
  conv_in = register_module("conv_in", conv(c.latent_channels, ch[0], 3, 1, 1));
  mid_block = register_module("mid_block", VAEMidBlock(ch[0], c.norm_num_groups));
  up_blocks = register_module("up_blocks", nn::ModuleList());
  for (std::int64_t i = 0; i < blocks; ++i) {
    up_blocks->push_back(VAEBlock(ch[i > 0 ? i - 1 : 0], ch[i], c.layers_per_block + 1, c.norm_num_groups,
                                  /*up=*/true, /*resample=*/i + 1 < blocks));
  }
  conv_norm_out = register_module("conv_norm_out", group_norm_layer(c.norm_num_groups, ch.back()));
  conv_out = register_module("conv_out", conv(ch.back(), c.out_channels, 3, 1, 1));
}

torch::Tensor VAEDecoderImpl::forward(const torch::Tensor& z) {
  auto h = mid_block->forward(conv_in->forward(z));
  for (const auto& b : *up_blocks) h = b->as<VAEBlockImpl>()->forward(h);
  return conv_out->forward(torch::silu(conv_norm_out->forward(h)));
}

AutoencoderKLImpl::AutoencoderKLImpl(const VAEConfig& c) : config_(c) {
  if (c.block_out_channels.empty()) fail("AutoencoderKL: block_out_channels is empty");
  for (auto ch : c.block_out_channels) {
    if (ch <= 0 || ch % c.norm_num_groups != 0)
      fail("AutoencoderKL: block_out_channels entry ", ch, " is not a positive multiple of norm_num_groups ",
           c.norm_num_groups);
  }
  encoder = register_module("encoder", VAEEncoder(c));
  decoder = register_module("decoder", VAEDecoder(c));
  if (c.use_quant_conv)
    quant_conv = register_module("quant_conv", conv(2 * c.latent_channels, 2 * c.latent_channels, 1));
  if (c.use_post_quant_conv)
    post_quant_conv = register_module("post_quant_conv", conv(c.latent_channels, c.latent_channels, 1));
}

DiagonalGaussian AutoencoderKLImpl::encode(const torch::Tensor& x) {
  const auto f = config_.downscale();
  if (x.dim() != 4 || x.size(1) != config_.in_channels || x.size(2) % f != 0 || x.size(3) % f != 0)
    fail("AutoencoderKL::encode: expected [N, ", config_.in_channels, ", H, W] with H, W multiples of ", f, ", got ",
         x.sizes());
  auto moments = encoder->forward(x);
  if (quant_conv) moments = quant_conv->forward(moments);
  auto parts = moments.chunk(2, 1);  // [N, latent, h, w] each
  return {parts[0], parts[1].clamp(-30.0, 20.0)};
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z) {
  if (z.dim() != 4 || z.size(1) != config_.latent_channels)
    fail("AutoencoderKL::decode: expected [N, ", config_.latent_channels, ", h, w], got ", z.sizes());
  return decoder->forward(post_quant_conv ? post_quant_conv->forward(z) : z);
}

torch::Tensor AutoencoderKLImpl::to_latent(const torch::Tensor& x, Rng& rng) {
  return config_.scaling_factor * (encode(x).sample(rng) - config_.shift_factor);
}

torch::Tensor AutoencoderKLImpl::to_latent(const torch::Tensor& x) {
  return config_.scaling_factor * (encode(x).mode() - config_.shift_factor);
}

torch::Tensor AutoencoderKLImpl::from_latent(const torch::Tensor& z) {
  return decode(z / config_.scaling_factor + config_.shift_factor);
}

namespace {
// What weight shapes cannot tell: from Atelier's "vae.config" metadata, else from a diffusers
// config.json beside the weights (scaling_factor, shift_factor, norm_num_groups), else `base`.
VAEConfig unshaped_settings(const std::filesystem::path& path, const TensorFile& file, VAEConfig c) {
  if (auto it = file.metadata.find("vae.config"); it != file.metadata.end())
    return with_context(
        [&] { return from_json<VAEConfig>(parse_json(it->second, path.string() + ": metadata 'vae.config'")); },
        path.string(), ": vae.config");
  const auto config_path = path.parent_path() / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(config_path, ec)) return c;
  const json j = load_json_file(config_path);
  if (!j.is_object() || j.value("_class_name", std::string()) != "AutoencoderKL") return c;
  if (auto v = j.find("scaling_factor"); v != j.end() && v->is_number()) c.scaling_factor = v->get<double>();
  if (auto v = j.find("shift_factor"); v != j.end() && v->is_number()) c.shift_factor = v->get<double>();
  if (auto v = j.find("norm_num_groups"); v != j.end() && v->is_number_integer())
    c.norm_num_groups = v->get<std::int64_t>();
  return c;
}
}  // namespace

AutoencoderKL load_vae(const std::filesystem::path& path, const VAEConfig& base) {
  TensorFile file = load_tensor_file(path);
  AutoencoderKL vae(detect_vae_config(file.tensors, unshaped_settings(path, file, base)));
  load_vae_state(*vae, file.tensors, path.string());
  return vae;
}

}  // namespace atelier
