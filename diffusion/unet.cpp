// Ref: huggingface/diffusers@v0.42.1 src/diffusers/models/unets/unet_2d_condition.py (UNet2DConditionModel),
// models/unets/unet_2d_blocks.py (CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D,
// CrossAttnUpBlock2D), models/resnet.py (ResnetBlock2D), models/downsampling.py + upsampling.py,
// models/transformers/transformer_2d.py (Transformer2DModel), models/attention.py (BasicTransformerBlock,
// FeedForward), models/activations.py (GEGLU), models/embeddings.py (Timesteps, TimestepEmbedding).
#include "diffusion/unet.h"

#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "diffusion/dit.h"

namespace atelier {
namespace F = torch::nn::functional;
namespace nn = torch::nn;

namespace {
constexpr double kAttentionNormEps = 1e-6;  // Transformer2DModel's GroupNorm
constexpr double kLayerNormEps = 1e-5;      // BasicTransformerBlock's LayerNorms

nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride = 1,
                std::int64_t padding = 0) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}

nn::Linear linear(std::int64_t in, std::int64_t out, bool bias = true) {
  return nn::Linear(nn::LinearOptions(in, out).bias(bias));
}

std::shared_ptr<nn::Module> child(nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<nn::Module>());
}

// Layers run in the input's dtype: weights stored in another dtype (fp16 to halve a model's memory, say)
// are cast at use.
torch::Tensor as_input(const torch::Tensor& w, const torch::Tensor& x) {
  return w.defined() && w.scalar_type() != x.scalar_type() ? w.to(x.scalar_type()) : w;
}
// The hooks of the UNet whose forward runs on this thread (set by UNet2DConditionModelImpl::forward): the
// Linear and Conv2d calls below add the updates attached to their layer (LoRA training, unmerged LoRA).
thread_local const LayerHooks* active_hooks = nullptr;
struct HooksScope {
  const LayerHooks* saved;
  explicit HooksScope(const LayerHooks* hooks) : saved(active_hooks) { active_hooks = hooks; }
  ~HooksScope() { active_hooks = saved; }
  HooksScope(const HooksScope&) = delete;
  HooksScope& operator=(const HooksScope&) = delete;
};

torch::Tensor call(const nn::Linear& l, const torch::Tensor& x) {
  auto out = torch::linear(x, as_input(l->weight, x), as_input(l->bias, x));
  return active_hooks != nullptr && !active_hooks->empty() ? active_hooks->add_updates(*l, out, x) : out;
}
torch::Tensor call(const nn::Conv2d& c, const torch::Tensor& x) {
  const auto& o = c->options;
  auto out = torch::conv2d(x, as_input(c->weight, x), as_input(c->bias, x), o.stride(),
                           std::get<torch::ExpandingArray<2>>(o.padding()), o.dilation(), o.groups());
  return active_hooks != nullptr && !active_hooks->empty() ? active_hooks->add_updates(*c, out, x) : out;
}
torch::Tensor call(const nn::GroupNorm& g, const torch::Tensor& x) {
  const auto& o = g->options;
  return torch::group_norm(x, o.num_groups(), as_input(g->weight, x), as_input(g->bias, x), o.eps());
}
torch::Tensor call(const nn::LayerNorm& n, const torch::Tensor& x) {
  const auto& o = n->options;
  return torch::layer_norm(x, o.normalized_shape(), as_input(n->weight, x), as_input(n->bias, x), o.eps());
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  return torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1).matmul(v);
#endif
}
}  // namespace

// ---- config ----

std::int64_t UNetConfig::heads(std::int64_t down_block) const {
  return attention_head_dim.size() == 1 ? attention_head_dim[0] : attention_head_dim.at(down_block);
}

void UNetConfig::validate() const {
  const auto n = blocks();
  if (n == 0) fail_field("block_out_channels", "is empty");
  if (static_cast<std::int64_t>(down_block_types.size()) != n)
    fail_field("down_block_types", "has ", down_block_types.size(), " entries for ", n, " blocks");
  if (static_cast<std::int64_t>(up_block_types.size()) != n)
    fail_field("up_block_types", "has ", up_block_types.size(), " entries for ", n, " blocks");
  for (const auto& t : down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      fail_field("down_block_types", "'", t, "' is not supported (CrossAttnDownBlock2D, DownBlock2D)");
  for (const auto& t : up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      fail_field("up_block_types", "'", t, "' is not supported (UpBlock2D, CrossAttnUpBlock2D)");
  if (attention_head_dim.size() != 1 && static_cast<std::int64_t>(attention_head_dim.size()) != n)
    fail_field("attention_head_dim", "has ", attention_head_dim.size(), " entries; expected 1 or ", n);
  for (auto ch : block_out_channels)
    if (ch <= 0 || ch % norm_num_groups != 0)
      fail_field("block_out_channels", "entry ", ch, " is not a positive multiple of norm_num_groups ",
                 norm_num_groups);
  auto check_heads = [&](std::int64_t block, const char* where) {
    const auto ch = block_out_channels[block], h = heads(block);
    if (h <= 0 || ch % h != 0)
      fail_field("attention_head_dim", where, " block ", block, ": ", ch, " channels do not split into ", h, " heads");
  };
  for (std::int64_t i = 0; i < n; ++i) {
    if (down_has_attention(i)) check_heads(i, "down");
    if (up_has_attention(i)) check_heads(n - 1 - i, "up");
  }
  check_heads(n - 1, "mid");
}

UNetConfig unet_preset(const std::string& name) {
  UNetConfig c;  // defaults are SD-1.5's
  if (name == "sd15") return c;
  if (name == "sd21" || name == "sd-turbo") {
    c.sample_size = name == "sd21" ? 96 : 64;
    c.attention_head_dim = {5, 10, 20, 20};
    c.cross_attention_dim = 1024;
    c.use_linear_projection = true;
    return c;
  }
  std::string list;
  for (const auto& n : unet_preset_names()) list += (list.empty() ? "" : ", ") + n;
  fail("unknown UNet preset '", name, "' (known: ", list, ")");
}

std::vector<std::string> unet_preset_names() {
  return {"sd15", "sd21", "sd-turbo"};
}

UNetConfig unet_config_from_diffusers(const json& j, const std::string& source) {
  return with_context(
      [&] {
        if (!j.is_object()) fail("not a JSON object");
        if (auto cls = j.find("_class_name"); cls != j.end() && *cls != "UNet2DConditionModel")
          fail("_class_name is ", cls->dump(), ", expected \"UNet2DConditionModel\"");
        // Settings UNetConfig does not model: accepted only at diffusers' default.
        static const json kDefaults = {
            {"center_input_sample", false},
            {"mid_block_type", "UNetMidBlock2DCrossAttn"},
            {"only_cross_attention", false},
            {"downsample_padding", 1},
            {"mid_block_scale_factor", 1},
            {"act_fn", "silu"},
            {"encoder_hid_dim", nullptr},
            {"encoder_hid_dim_type", nullptr},
            {"num_attention_heads", nullptr},
            {"dual_cross_attention", false},
            {"class_embed_type", nullptr},
            {"addition_embed_type", nullptr},
            {"addition_time_embed_dim", nullptr},
            {"num_class_embeds", nullptr},
            {"resnet_time_scale_shift", "default"},
            {"resnet_skip_time_act", false},
            {"resnet_out_scale_factor", 1},
            {"time_embedding_type", "positional"},
            {"time_embedding_dim", nullptr},
            {"time_embedding_act_fn", nullptr},
            {"timestep_post_act", nullptr},
            {"conv_in_kernel", 3},
            {"conv_out_kernel", 3},
            {"projection_class_embeddings_input_dim", nullptr},
            {"attention_type", "default"},
            {"class_embeddings_concat", false},
            {"mid_block_only_cross_attention", nullptr},
            {"cross_attention_norm", nullptr},
            {"reverse_transformer_layers_per_block", nullptr},
        };
        // Training-time or numerics-only settings.
        static const std::set<std::string> kIgnored = {"dropout", "upcast_attention", "addition_embed_type_num_heads"};
        static const std::set<std::string> kFields = {
            "sample_size",        "in_channels",           "out_channels",       "flip_sin_to_cos",
            "freq_shift",         "down_block_types",      "up_block_types",     "block_out_channels",
            "layers_per_block",   "norm_num_groups",       "norm_eps",           "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "time_cond_proj_dim", "transformer_layers_per_block"};
        json fields = json::object();
        // A list of equal values (diffusers' per-block form) as one value.
        auto uniform = [](const std::string& key, const json& v) -> json {
          if (!v.is_array()) return v;
          if (v.empty()) fail("'", key, "' is an empty list");
          for (const auto& e : v)
            if (e != v.front())
              fail("'", key, "' differs between entries (", v.dump(), "); only one value is supported");
          return v.front();
        };
        for (const auto& [key, value] : j.items()) {
          if (key.starts_with("_") || kIgnored.count(key)) continue;
          if (auto d = kDefaults.find(key); d != kDefaults.end()) {
            const bool all_false_list =
                key == "only_cross_attention" && value.is_array() &&
                std::all_of(value.begin(), value.end(), [](const json& e) { return e == false; });
            if (value != *d && !all_false_list && !(key == "mid_block_only_cross_attention" && value == false))
              fail("'", key, "' is ", value.dump(), "; only ", d->dump(), " is supported");
            continue;
          }
          if (!kFields.count(key)) fail("unknown key '", key, "'");
          if (key == "sample_size") {
            fields[key] = uniform(key, value);
          } else if (key == "attention_head_dim") {
            fields[key] = value.is_array() ? value : json::array({value});
          } else if (key == "time_cond_proj_dim") {
            fields[key] = value.is_null() ? json(0) : value;
          } else if (key == "layers_per_block" || key == "cross_attention_dim" ||
                     key == "transformer_layers_per_block") {
            fields[key] = uniform(key, value);
          } else if (key == "norm_num_groups" && value.is_null()) {
            fail("'norm_num_groups' null (no GroupNorm) is not supported");
          } else {
            fields[key] = value;
          }
        }
        UNetConfig c = from_json<UNetConfig>(fields);
        c.validate();
        return c;
      },
      source);
}

// ---- modules ----

UNetResnetBlockImpl::UNetResnetBlockImpl(std::int64_t in, std::int64_t out, std::int64_t temb, std::int64_t groups,
                                         double eps) {
  norm1 = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(groups, in).eps(eps)));
  conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
  time_emb_proj = register_module("time_emb_proj", linear(temb, out));
  norm2 = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(groups, out).eps(eps)));
  conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
  if (in != out) conv_shortcut = register_module("conv_shortcut", conv(in, out, 1));
}

torch::Tensor UNetResnetBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  auto h = call(conv1, torch::silu(call(norm1, x)));
  h = h + call(time_emb_proj, torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);  // [N, out, 1, 1]
  h = call(conv2, torch::silu(call(norm2, h)));
  return (conv_shortcut ? call(conv_shortcut, x) : x) + h;
}

UNetAttentionImpl::UNetAttentionImpl(std::int64_t dim, std::int64_t context_dim, std::int64_t heads_) : heads(heads_) {
  to_q = register_module("to_q", linear(dim, dim, false));
  to_k = register_module("to_k", linear(context_dim, dim, false));
  to_v = register_module("to_v", linear(context_dim, dim, false));
  auto out = register_module("to_out", nn::ModuleList());
  to_out = linear(dim, dim);
  out->push_back(to_out);
}

torch::Tensor UNetAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const auto& ctx = context.defined() ? context : x;
  const auto n = x.size(0), t = x.size(1), d = to_q->options.out_features(), hd = d / heads;
  auto split = [&](const torch::Tensor& y) { return y.view({n, -1, heads, hd}).transpose(1, 2); };  // [N, h, T, hd]
  auto a = attention(split(call(to_q, x)), split(call(to_k, ctx)), split(call(to_v, ctx)));
  return call(to_out, a.transpose(1, 2).reshape({n, t, d}));  // [N, T, D]
}

UNetTransformerBlockImpl::UNetTransformerBlockImpl(std::int64_t dim, std::int64_t context_dim, std::int64_t heads) {
  auto layer_norm = [&] { return nn::LayerNorm(nn::LayerNormOptions({dim}).eps(kLayerNormEps)); };
  norm1 = register_module("norm1", layer_norm());
  attn1 = register_module("attn1", UNetAttention(dim, dim, heads));
  norm2 = register_module("norm2", layer_norm());
  attn2 = register_module("attn2", UNetAttention(dim, context_dim, heads));
  norm3 = register_module("norm3", layer_norm());
  auto net = child(*this, "ff")->register_module("net", nn::ModuleList());
  auto geglu = std::make_shared<nn::Module>();
  ff_in = geglu->register_module("proj", linear(dim, 8 * dim));
  ff_out = linear(4 * dim, dim);
  net->push_back(geglu);
  net->push_back(nn::Dropout(0.0));  // net.1 holds no weights
  net->push_back(ff_out);
}

torch::Tensor UNetTransformerBlockImpl::add_gamma(const std::string& branch) {
  torch::Tensor* gamma = branch == "attn1"   ? &gamma_attn1
                         : branch == "attn2" ? &gamma_attn2
                         : branch == "ff"    ? &gamma_ff
                                             : nullptr;
  if (gamma == nullptr) fail("no residual branch '", branch, "' in a UNet transformer block (attn1, attn2, ff)");
  if (!gamma->defined())
    *gamma = register_parameter("gamma_" + branch, torch::ones({norm1->weight.size(0)}, norm1->weight.options()));
  return *gamma;
}

torch::Tensor UNetTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  auto scaled = [&](const torch::Tensor& gamma, torch::Tensor branch) {
    return gamma.defined() ? branch * as_input(gamma, branch) : branch;
  };
  auto h = x + scaled(gamma_attn1, attn1->forward(call(norm1, x)));
  h = h + scaled(gamma_attn2, attn2->forward(call(norm2, h), context));
  auto parts = call(ff_in, call(norm3, h)).chunk(2, -1);  // GEGLU: value, gate [N, T, 4D]
  return h + scaled(gamma_ff, call(ff_out, parts[0] * torch::gelu(parts[1])));
}

UNetSpatialTransformerImpl::UNetSpatialTransformerImpl(std::int64_t channels, const UNetConfig& c, std::int64_t heads) {
  norm =
      register_module("norm", nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, channels).eps(kAttentionNormEps)));
  if (c.use_linear_projection)
    proj_in_linear = register_module("proj_in", linear(channels, channels));
  else
    proj_in_conv = register_module("proj_in", conv(channels, channels, 1));
  transformer_blocks = register_module("transformer_blocks", nn::ModuleList());
  for (std::int64_t b = 0; b < c.transformer_layers_per_block; ++b)
    transformer_blocks->push_back(UNetTransformerBlock(channels, c.cross_attention_dim, heads));
  if (c.use_linear_projection)
    proj_out_linear = register_module("proj_out", linear(channels, channels));
  else
    proj_out_conv = register_module("proj_out", conv(channels, channels, 1));
}

torch::Tensor UNetSpatialTransformerImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const auto n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  auto to_tokens = [&](const torch::Tensor& y) { return y.permute({0, 2, 3, 1}).reshape({n, h * w, c}); };
  auto to_map = [&](const torch::Tensor& y) { return y.reshape({n, h, w, c}).permute({0, 3, 1, 2}); };
  auto hs = call(norm, x);
  hs = proj_in_conv ? to_tokens(call(proj_in_conv, hs)) : call(proj_in_linear, to_tokens(hs));  // [N, HW, C]
  for (const auto& b : *transformer_blocks) hs = b->as<UNetTransformerBlockImpl>()->forward(hs, context);
  hs = proj_out_conv ? call(proj_out_conv, to_map(hs).contiguous()) : to_map(call(proj_out_linear, hs));
  return hs + x;
}

UNetDownBlockImpl::UNetDownBlockImpl(const UNetConfig& c, std::int64_t i) {
  const auto& ch = c.block_out_channels;
  const auto out = ch[i], temb = 4 * ch[0];
  resnets = register_module("resnets", nn::ModuleList());
  if (c.down_has_attention(i)) attentions = register_module("attentions", nn::ModuleList());
  for (std::int64_t j = 0; j < c.layers_per_block; ++j) {
    resnets->push_back(UNetResnetBlock(j == 0 ? ch[i > 0 ? i - 1 : 0] : out, out, temb, c.norm_num_groups, c.norm_eps));
    if (attentions) attentions->push_back(UNetSpatialTransformer(out, c, c.heads(i)));
  }
  if (i + 1 < c.blocks()) {
    auto samplers = register_module("downsamplers", nn::ModuleList());
    auto holder = std::make_shared<nn::Module>();
    downsample = holder->register_module("conv", conv(out, out, 3, 2, 1));
    samplers->push_back(holder);
  }
}

torch::Tensor UNetDownBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                         std::vector<torch::Tensor>& skips) {
  for (std::size_t j = 0; j < resnets->size(); ++j) {
    x = resnets->at<UNetResnetBlockImpl>(j).forward(x, temb);
    if (attentions) x = attentions->at<UNetSpatialTransformerImpl>(j).forward(x, context);
    skips.push_back(x);
  }
  if (downsample) {
    x = call(downsample, x);  // [N, C, ceil(H/2), ceil(W/2)]
    skips.push_back(x);
  }
  return x;
}

UNetMidBlockImpl::UNetMidBlockImpl(const UNetConfig& c) {
  const auto ch = c.block_out_channels.back(), temb = 4 * c.block_out_channels[0];
  resnets = register_module("resnets", nn::ModuleList());
  attentions = register_module("attentions", nn::ModuleList());
  resnets->push_back(UNetResnetBlock(ch, ch, temb, c.norm_num_groups, c.norm_eps));
  attentions->push_back(UNetSpatialTransformer(ch, c, c.heads(c.blocks() - 1)));
  resnets->push_back(UNetResnetBlock(ch, ch, temb, c.norm_num_groups, c.norm_eps));
}

torch::Tensor UNetMidBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb,
                                        const torch::Tensor& context) {
  auto h = resnets->at<UNetResnetBlockImpl>(0).forward(x, temb);
  h = attentions->at<UNetSpatialTransformerImpl>(0).forward(h, context);
  return resnets->at<UNetResnetBlockImpl>(1).forward(h, temb);
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetConfig& c, std::int64_t i) {
  const auto& ch = c.block_out_channels;
  const auto n = c.blocks(), temb = 4 * ch[0];
  const auto out = ch[n - 1 - i];                                   // this block's channels
  const auto prev = ch[i == 0 ? n - 1 : n - i];                     // channels coming from below
  const auto skip_last = ch[std::max<std::int64_t>(n - 2 - i, 0)];  // the down block input's channels
  resnets = register_module("resnets", nn::ModuleList());
  if (c.up_has_attention(i)) attentions = register_module("attentions", nn::ModuleList());
  for (std::int64_t j = 0; j <= c.layers_per_block; ++j) {
    const auto in = (j == 0 ? prev : out) + (j == c.layers_per_block ? skip_last : out);
    resnets->push_back(UNetResnetBlock(in, out, temb, c.norm_num_groups, c.norm_eps));
    if (attentions) attentions->push_back(UNetSpatialTransformer(out, c, c.heads(n - 1 - i)));
  }
  if (i + 1 < n) {
    auto samplers = register_module("upsamplers", nn::ModuleList());
    auto holder = std::make_shared<nn::Module>();
    upsample = holder->register_module("conv", conv(out, out, 3, 1, 1));
    samplers->push_back(holder);
  }
}

torch::Tensor UNetUpBlockImpl::forward(torch::Tensor x, const torch::Tensor& temb, const torch::Tensor& context,
                                       std::vector<torch::Tensor>& skips) {
  for (std::size_t j = 0; j < resnets->size(); ++j) {
    x = torch::cat({x, skips.back()}, 1);  // [N, C + C_skip, H, W]
    skips.pop_back();
    x = resnets->at<UNetResnetBlockImpl>(j).forward(x, temb);
    if (attentions) x = attentions->at<UNetSpatialTransformerImpl>(j).forward(x, context);
  }
  if (upsample) {
    // To the next skip's size: 2x, or one less where a downsampler rounded an odd side up.
    const auto size = skips.back().sizes().slice(2).vec();
    x = F::interpolate(x, F::InterpolateFuncOptions().size(size).mode(torch::kNearest));
    x = call(upsample, x);
  }
  return x;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& c) : config_(c) {
  c.validate();
  const auto& ch = c.block_out_channels;
  const auto temb = 4 * ch[0];
  conv_in = register_module("conv_in", conv(c.in_channels, ch[0], 3, 1, 1));
  auto time_embedding = child(*this, "time_embedding");
  if (c.time_cond_proj_dim > 0)
    time_cond_proj = time_embedding->register_module("cond_proj", linear(c.time_cond_proj_dim, ch[0], false));
  time_linear_1 = time_embedding->register_module("linear_1", linear(ch[0], temb));
  time_linear_2 = time_embedding->register_module("linear_2", linear(temb, temb));
  down_blocks = register_module("down_blocks", nn::ModuleList());
  for (std::int64_t i = 0; i < c.blocks(); ++i) down_blocks->push_back(UNetDownBlock(c, i));
  mid_block = register_module("mid_block", UNetMidBlock(c));
  up_blocks = register_module("up_blocks", nn::ModuleList());
  for (std::int64_t i = 0; i < c.blocks(); ++i) up_blocks->push_back(UNetUpBlock(c, i));
  conv_norm_out =
      register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, ch[0]).eps(c.norm_eps)));
  conv_out = register_module("conv_out", conv(ch[0], c.out_channels, 3, 1, 1));
}

torch::Tensor UNet2DConditionModelImpl::time_embed(const torch::Tensor& timesteps, const torch::Tensor& timestep_cond,
                                                   torch::ScalarType dtype) {
  const auto dim = config_.block_out_channels[0], half = dim / 2;
  auto emb = timestep_embedding(timesteps, dim, config_.freq_shift);  // [N, dim] float32, [cos, sin]
  if (!config_.flip_sin_to_cos)
    emb = torch::cat({emb.narrow(1, half, half), emb.narrow(1, 0, half), emb.narrow(1, 2 * half, dim - 2 * half)}, 1);
  emb = emb.to(dtype);
  if (time_cond_proj) {
    if (!timestep_cond.defined())
      fail("UNet2DConditionModel: this model (time_cond_proj_dim ", config_.time_cond_proj_dim,
           ") needs timestep_cond [N, ", config_.time_cond_proj_dim, "]");
    emb = emb + call(time_cond_proj, timestep_cond.to(emb.dtype()));
  } else if (timestep_cond.defined()) {
    fail("UNet2DConditionModel: timestep_cond given but the model has no time_embedding.cond_proj");
  }
  return call(time_linear_2, torch::silu(call(time_linear_1, emb)));  // [N, 4 * C0]
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                                                const torch::Tensor& encoder_hidden_states,
                                                const torch::Tensor& timestep_cond) {
  const HooksScope scope(&hooks);
  const auto& c = config_;
  if (sample.dim() != 4 || sample.size(1) != c.in_channels)
    fail("UNet2DConditionModel: sample must be [N, ", c.in_channels, ", H, W], got ", sample.sizes());
  const auto n = sample.size(0);
  if (encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != n ||
      encoder_hidden_states.size(2) != c.cross_attention_dim)
    fail("UNet2DConditionModel: encoder_hidden_states must be [", n, ", L, ", c.cross_attention_dim, "], got ",
         encoder_hidden_states.sizes());
  auto t = timestep.reshape({-1}).to(sample.device());
  if (t.size(0) == 1) t = t.expand({n});
  if (t.size(0) != n) fail("UNet2DConditionModel: ", timestep.sizes(), " timesteps for a batch of ", n);
  if (timestep_cond.defined() && (timestep_cond.dim() != 2 || timestep_cond.size(0) != n))
    fail("UNet2DConditionModel: timestep_cond must be [", n, ", ", c.time_cond_proj_dim, "], got ",
         timestep_cond.sizes());
  const auto temb = time_embed(t, timestep_cond, sample.scalar_type());

  auto h = call(conv_in, sample);
  std::vector<torch::Tensor> skips = {h};
  for (const auto& b : *down_blocks) h = b->as<UNetDownBlockImpl>()->forward(h, temb, encoder_hidden_states, skips);
  h = mid_block->forward(h, temb, encoder_hidden_states);
  for (const auto& b : *up_blocks) h = b->as<UNetUpBlockImpl>()->forward(h, temb, encoder_hidden_states, skips);
  return call(conv_out, torch::silu(call(conv_norm_out, h)));  // [N, out, H, W]
}

}  // namespace atelier
