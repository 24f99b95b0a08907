// UNet2DConditionModel key dialects (LDM single file -> diffusers), config detection from shapes, loading.
// Ref: huggingface/diffusers@v0.42.1 src/diffusers/loaders/single_file_utils.py (convert_ldm_unet_checkpoint,
// DIFFUSERS_TO_LDM_MAPPING["unet"], update_unet_resnet_ldm_to_diffusers), scripts/
// convert_diffusers_to_original_stable_diffusion.py (unet_conversion_map*); CompVis/stable-diffusion
// ldm/modules/diffusionmodules/openaimodel.py (UNetModel: input_blocks, middle_block, output_blocks, out).
#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <string_view>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_io.h"
#include "core/training_state.h"
#include "core/translated_load.h"
#include "diffusion/unet.h"

namespace atelier {
namespace {

constexpr std::string_view kLDMPrefix = "model.diffusion_model.";

// A rule renames the key prefix `ldm` to `diffusers`, segment by segment; the rest of the key is kept.
// In `ldm`, "{in}" matches an input block number k >= 1, binding {i} = (k-1) / (L+1) and {j} = (k-1) % (L+1),
// and "{out}" an output block number k, binding {i} = k / (L+1) and {j} = k % (L+1), where L is
// layers_per_block: LDM numbers the down path's (resnet, attention) pairs and downsamplers, and the up path's
// pairs (the upsampler joins a block's last pair), consecutively. `resnet` marks ResBlocks, whose inner
// names are translated by kResnetRules.
struct UNetKeyRule {
  const char* ldm;
  const char* diffusers;
  bool resnet = false;
};

// Ref: convert_ldm_unet_checkpoint; openaimodel.py UNetModel.__init__.
constexpr UNetKeyRule kLDMRules[] = {
    {"time_embed.0", "time_embedding.linear_1"},
    {"time_embed.2", "time_embedding.linear_2"},
    {"input_blocks.0.0", "conv_in"},
    {"input_blocks.{in}.0.op", "down_blocks.{i}.downsamplers.0.conv"},
    {"input_blocks.{in}.0", "down_blocks.{i}.resnets.{j}", true},
    {"input_blocks.{in}.1", "down_blocks.{i}.attentions.{j}"},
    {"middle_block.0", "mid_block.resnets.0", true},
    {"middle_block.1", "mid_block.attentions.0"},
    {"middle_block.2", "mid_block.resnets.1", true},
    {"output_blocks.{out}.1.conv", "up_blocks.{i}.upsamplers.0.conv"},  // UpBlock2D: Upsample follows the resnet
    {"output_blocks.{out}.2.conv", "up_blocks.{i}.upsamplers.0.conv"},  // CrossAttnUpBlock2D: after the attention
    {"output_blocks.{out}.0", "up_blocks.{i}.resnets.{j}", true},
    {"output_blocks.{out}.1", "up_blocks.{i}.attentions.{j}"},
    {"out.0", "conv_norm_out"},
    {"out.2", "conv_out"},
};

// ResBlock (in_layers = GroupNorm, SiLU, conv; emb_layers = SiLU, Linear; out_layers = GroupNorm, SiLU,
// Dropout, conv) -> ResnetBlock2D. The SpatialTransformer's names equal Transformer2DModel's.
constexpr UNetKeyRule kResnetRules[] = {
    {"in_layers.0", "norm1"},  {"in_layers.2", "conv1"},  {"emb_layers.1", "time_emb_proj"},
    {"out_layers.0", "norm2"}, {"out_layers.3", "conv2"}, {"skip_connection", "conv_shortcut"},
};

std::optional<std::int64_t> index_of(std::string_view s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

struct Renamed {
  std::string name;  // empty: no match
  std::string rest;  // the key's segments after the rule's prefix
};

Renamed apply_rule(const UNetKeyRule& rule, std::string_view key, std::int64_t layers) {
  const auto pattern = split_key(rule.ldm), parts = split_key(key);
  if (parts.size() < pattern.size()) return {};
  std::map<std::string_view, std::string> bound;
  for (std::size_t s = 0; s < pattern.size(); ++s) {
    const auto p = pattern[s];
    if (p == "{in}" || p == "{out}") {
      const auto k = index_of(parts[s]);
      if (!k || (p == "{in}" && *k == 0)) return {};
      const auto n = p == "{in}" ? *k - 1 : *k;
      bound["{i}"] = std::to_string(n / (layers + 1));
      bound["{j}"] = std::to_string(n % (layers + 1));
    } else if (p != parts[s]) {
      return {};
    }
  }
  Renamed r;
  for (auto seg : split_key(rule.diffusers)) {
    if (!r.name.empty()) r.name += '.';
    auto it = bound.find(seg);
    r.name += it != bound.end() ? std::string_view(it->second) : seg;
  }
  for (std::size_t s = pattern.size(); s < parts.size(); ++s) r.rest.append(r.rest.empty() ? "" : ".").append(parts[s]);
  return r;
}

// LDM layers_per_block: the first downsampler is input block L + 1; a one-block UNet has none, and its
// input blocks are conv_in and the L pairs.
std::int64_t ldm_layers_per_block(const TensorMap& ldm) {
  std::int64_t first_op = -1, last_input = 0;
  for (const auto& [k, _] : ldm) {
    const auto parts = split_key(k);
    if (parts.size() < 3 || parts[0] != "input_blocks") continue;
    const auto idx = index_of(parts[1]);
    if (!idx) continue;
    last_input = std::max(last_input, *idx);
    if (parts.size() > 3 && parts[2] == "0" && parts[3] == "op" && *idx > 0 && (first_op < 0 || *idx < first_op))
      first_op = *idx;
  }
  return std::max<std::int64_t>(1, first_op > 0 ? first_op - 1 : last_input);
}

struct Translated {
  TensorMap tensors;                          // diffusers names
  std::map<std::string, std::string> origin;  // diffusers name -> the file's name, where they differ
  UNetKeyDialect dialect = UNetKeyDialect::Diffusers;
};

Translated translate(const TensorMap& file) {
  std::string prefix = "state_dict.";
  TensorMap source = tensors_under(file, prefix);
  if (source.empty()) {
    source = file;
    prefix.clear();
  }
  Translated out;
  if (TensorMap unet = tensors_under(source, kLDMPrefix); !unet.empty()) {
    source = std::move(unet);
    prefix += kLDMPrefix;
    out.dialect = UNetKeyDialect::LDM;
  } else if (std::any_of(source.begin(), source.end(), [](const auto& kv) {
               return kv.first.starts_with("input_blocks.") || kv.first.starts_with("middle_block.") ||
                      kv.first.starts_with("output_blocks.") || kv.first.starts_with("time_embed.");
             })) {
    out.dialect = UNetKeyDialect::LDM;
  }
  const auto layers = out.dialect == UNetKeyDialect::LDM ? ldm_layers_per_block(source) : 0;
  for (const auto& [key, value] : source) {
    std::string name = key;
    if (out.dialect == UNetKeyDialect::LDM) {
      for (const auto& rule : kLDMRules) {
        Renamed r = apply_rule(rule, key, layers);
        if (r.name.empty()) continue;
        if (rule.resnet) {
          for (const auto& inner : kResnetRules) {
            Renamed in = apply_rule(inner, r.rest, layers);
            if (in.name.empty()) continue;
            r.rest = in.name + (in.rest.empty() ? "" : "." + in.rest);
            break;
          }
        }
        name = r.name + (r.rest.empty() ? "" : "." + r.rest);
        break;
      }
    }
    const std::string file_key = prefix + key;
    if (name != file_key) out.origin[name] = file_key;
    if (!out.tensors.emplace(name, value).second)
      fail("UNet weights: '", file_key, "' and another key both map to '", name, "'");
  }
  return out;
}

void load_translated(UNet2DConditionModelImpl& unet, const Translated& t, const std::string& source) {
  load_translated_tensors(unet, t.tensors, t.origin, source + " (" + dialect_name(t.dialect) + " names)");
}

const torch::Tensor* find(const TensorMap& t, const std::string& key) {
  auto it = t.find(key);
  return it == t.end() ? nullptr : &it->second;
}

UNetConfig detect(const TensorMap& w, const UNetConfig& base, std::string* how) {
  auto require = [&](const std::string& key, std::int64_t dims) -> const torch::Tensor& {
    const torch::Tensor* p = find(w, key);
    if (!p) fail("UNet weights: no '", key, "'; not a UNet2DConditionModel state dict");
    if (p->dim() != dims) fail("UNet weights: '", key, "' has shape ", p->sizes(), ", expected ", dims, " dimensions");
    return *p;
  };
  UNetConfig c = base;
  const auto& conv_in = require("conv_in.weight", 4);  // [C0, in, 3, 3]
  c.in_channels = conv_in.size(1);
  c.out_channels = require("conv_out.weight", 4).size(0);  // [out, C0, 3, 3]
  c.block_out_channels.clear();
  c.down_block_types.clear();
  c.up_block_types.clear();
  for (std::int64_t i = 0;; ++i) {
    const std::string down = "down_blocks." + std::to_string(i);
    const auto* conv1 = find(w, down + ".resnets.0.conv1.weight");
    if (!conv1) break;
    c.block_out_channels.push_back(conv1->size(0));
    c.down_block_types.push_back(find(w, down + ".attentions.0.norm.weight") ? "CrossAttnDownBlock2D" : "DownBlock2D");
    c.up_block_types.push_back(
        find(w, "up_blocks." + std::to_string(i) + ".attentions.0.norm.weight") ? "CrossAttnUpBlock2D" : "UpBlock2D");
  }
  if (c.block_out_channels.empty()) require("down_blocks.0.resnets.0.conv1.weight", 4);
  c.layers_per_block = 0;
  while (find(w, "down_blocks.0.resnets." + std::to_string(c.layers_per_block) + ".conv1.weight")) ++c.layers_per_block;

  const std::string mid = "mid_block.attentions.0.";
  c.cross_attention_dim = require(mid + "transformer_blocks.0.attn2.to_k.weight", 2).size(1);  // [C, cross]
  const auto* proj_in = find(w, mid + "proj_in.weight");  // Linear [C, C] or 1x1 conv [C, C, 1, 1]
  if (!proj_in) fail("UNet weights: no '", mid, "proj_in.weight'; not a UNet2DConditionModel state dict");
  if (proj_in->dim() != 2 && proj_in->dim() != 4)
    fail("UNet weights: '", mid, "proj_in.weight' has shape ", proj_in->sizes(),
         "; expected [C, C] (linear) or [C, C, 1, 1] (conv)");
  c.use_linear_projection = proj_in->dim() == 2;
  c.transformer_layers_per_block = 0;
  while (find(w, mid + "transformer_blocks." + std::to_string(c.transformer_layers_per_block) + ".norm1.weight"))
    ++c.transformer_layers_per_block;
  const auto* cond = find(w, "time_embedding.cond_proj.weight");  // [C0, cond]
  c.time_cond_proj_dim = cond && cond->dim() == 2 ? cond->size(1) : 0;

  const bool sd1 = !c.use_linear_projection && c.cross_attention_dim == 768;
  const bool sd2 = c.use_linear_projection && c.cross_attention_dim == 1024 &&
                   std::all_of(c.block_out_channels.begin(), c.block_out_channels.end(),
                               [](std::int64_t ch) { return ch % 64 == 0; });
  if (sd1) {
    c.attention_head_dim = {8};
  } else if (sd2) {
    c.attention_head_dim.clear();
    for (auto ch : c.block_out_channels) c.attention_head_dim.push_back(ch / 64);
  }
  if (how)
    *how = sd1   ? "detected from shapes (SD1: 8 heads per block)"
           : sd2 ? "detected from shapes (SD2: head dim 64)"
                 : "detected from shapes (heads from the base config)";
  with_context([&] { c.validate(); }, "detected UNet config");
  return c;
}

// The config.json of a diffusers UNet beside `path`, if there is one.
std::optional<std::filesystem::path> diffusers_config_beside(const std::filesystem::path& path) {
  const auto config = path.parent_path() / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(config, ec)) return std::nullopt;
  const json j = load_json_file(config);
  if (!j.is_object() || j.value("_class_name", std::string()) != "UNet2DConditionModel") return std::nullopt;
  return config;
}

}  // namespace

const char* dialect_name(UNetKeyDialect d) {
  switch (d) {
    case UNetKeyDialect::Diffusers: return "diffusers";
    case UNetKeyDialect::LDM: return "LDM";
  }
  return "?";
}

TensorMap unet_tensors_to_diffusers(const TensorMap& tensors, UNetKeyDialect* detected,
                                    std::map<std::string, std::string>* origin) {
  Translated t = translate(tensors);
  if (detected) *detected = t.dialect;
  if (origin) *origin = std::move(t.origin);
  return std::move(t.tensors);
}

UNetConfig detect_unet_config(const TensorMap& diffusers_tensors, const UNetConfig& base) {
  return detect(diffusers_tensors, base, nullptr);
}

void load_unet_state(UNet2DConditionModelImpl& unet, const TensorMap& tensors, const std::string& source) {
  load_translated(unet, translate(tensors), source);
}

UNet2DConditionModel load_unet(const std::filesystem::path& path, const UNetLoadOptions& options, UNetFileInfo* info) {
  const Translated t = translate(load_tensor_file(path).tensors);
  UNetFileInfo i;
  i.dialect = t.dialect;
  if (options.config) {
    i.config = *options.config;
    i.config_source = "options";
  } else if (auto config_json = diffusers_config_beside(path)) {
    i.config = unet_config_from_diffusers(load_json_file(*config_json), config_json->string());
    i.config_source = config_json->string();
  } else {
    i.config = with_context([&] { return detect(t.tensors, options.base, &i.config_source); }, path.string());
  }
  UNet2DConditionModel unet = with_context([&] { return UNet2DConditionModel(i.config); }, path.string());
  load_translated(*unet, t, path.string());
  unet->eval();
  if (info) *info = std::move(i);
  return unet;
}

}  // namespace atelier
