// AutoencoderKL key dialects -> diffusers names, one table per dialect; config detection from shapes.
// Ref: huggingface/diffusers@v0.42.1 src/diffusers/loaders/single_file_utils.py (convert_ldm_vae_checkpoint,
// LDM_VAE_KEYS), scripts/convert_vae_pt_to_diffusers.py, models/modeling_utils.py
// (_convert_deprecated_attention_blocks).
#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <string_view>

#include "core/error.h"
#include "core/training_state.h"
#include "core/translated_load.h"
#include "diffusion/vae.h"

namespace atelier {
namespace {

// A rule renames the key prefix `from` to `to`, segment by segment. In `from`, "{i}" and "{j}" match a
// number copied into the same placeholder of `to`; "{r}" matches a reversed up-block number (LDM
// decoder.up.{n-1-i}) written as {i}; "*" matches any one segment, copied to the "*" of `to`.
// `linear` marks attention projections stored as 1x1 convs [C, C, 1, 1] (or conv1d [C, C, 1]).
struct KeyRule {
  const char* from;
  const char* to;
  bool linear = false;
};

// Ref: convert_ldm_vae_checkpoint / update_vae_{resnet,attentions}_ldm_to_diffusers.
constexpr KeyRule kLDMRules[] = {
    {"encoder.down.{i}.block.{j}.nin_shortcut", "encoder.down_blocks.{i}.resnets.{j}.conv_shortcut"},
    {"encoder.down.{i}.block.{j}", "encoder.down_blocks.{i}.resnets.{j}"},
    {"encoder.down.{i}.downsample", "encoder.down_blocks.{i}.downsamplers.0"},
    {"decoder.up.{r}.block.{j}.nin_shortcut", "decoder.up_blocks.{i}.resnets.{j}.conv_shortcut"},
    {"decoder.up.{r}.block.{j}", "decoder.up_blocks.{i}.resnets.{j}"},
    {"decoder.up.{r}.upsample", "decoder.up_blocks.{i}.upsamplers.0"},
    {"*.mid.block_1", "*.mid_block.resnets.0"},
    {"*.mid.block_2", "*.mid_block.resnets.1"},
    {"*.mid.attn_1.norm", "*.mid_block.attentions.0.group_norm"},
    {"*.mid.attn_1.q", "*.mid_block.attentions.0.to_q", true},
    {"*.mid.attn_1.k", "*.mid_block.attentions.0.to_k", true},
    {"*.mid.attn_1.v", "*.mid_block.attentions.0.to_v", true},
    {"*.mid.attn_1.proj_out", "*.mid_block.attentions.0.to_out.0", true},
    {"*.norm_out", "*.conv_norm_out"},
};

// Ref: ModelMixin._convert_deprecated_attention_blocks (diffusers < 0.14 attention names).
constexpr KeyRule kDiffusersOldRules[] = {
    {"*.mid_block.attentions.0.query", "*.mid_block.attentions.0.to_q"},
    {"*.mid_block.attentions.0.key", "*.mid_block.attentions.0.to_k"},
    {"*.mid_block.attentions.0.value", "*.mid_block.attentions.0.to_v"},
    {"*.mid_block.attentions.0.proj_attn", "*.mid_block.attentions.0.to_out.0"},
};

// A block/layer index segment ("0", "12"); nullopt for anything else, including overflowing numbers.
std::optional<std::int64_t> index_of(std::string_view s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// The renamed key if `rule` matches a prefix of `key`, else empty. `up_blocks` resolves "{r}".
std::string apply_rule(const KeyRule& rule, const std::string& key, std::int64_t up_blocks) {
  auto pattern = split_key(rule.from);
  auto parts = split_key(key);
  if (parts.size() < pattern.size()) return {};
  std::map<std::string_view, std::string> bound;
  for (std::size_t s = 0; s < pattern.size(); ++s) {
    const auto p = pattern[s];
    if (p == "*") {
      bound["*"] = std::string(parts[s]);
    } else if (p == "{i}" || p == "{j}" || p == "{r}") {
      const auto index = index_of(parts[s]);
      if (!index) return {};
      if (p == "{r}") {
        if (*index >= up_blocks) return {};
        bound["{i}"] = std::to_string(up_blocks - 1 - *index);
      } else {
        bound[p] = std::string(parts[s]);
      }
    } else if (p != parts[s]) {
      return {};
    }
  }
  std::string out;
  auto append = [&](std::string_view seg) {
    if (!out.empty()) out += '.';
    out += seg;
  };
  for (auto seg : split_key(rule.to)) {
    auto it = bound.find(seg);
    append(it != bound.end() ? std::string_view(it->second) : seg);
  }
  for (std::size_t s = pattern.size(); s < parts.size(); ++s) append(parts[s]);
  return out;
}

// A torch .ckpt's "state_dict.", then the VAE of a full checkpoint ("first_stage_model." or "vae."),
// stripped; `prefix` is what was stripped.
struct VAEPart {
  TensorMap tensors;
  std::string prefix;
};
VAEPart vae_part(const TensorMap& file) {
  VAEPart part{tensors_under(file, "state_dict."), "state_dict."};
  if (part.tensors.empty()) part = {file, ""};
  for (std::string_view prefix : {"first_stage_model.", "vae."}) {
    TensorMap vae = tensors_under(part.tensors, prefix);
    if (!vae.empty()) return {std::move(vae), part.prefix + std::string(prefix)};
  }
  return part;
}

VAEKeyDialect detect_dialect(const TensorMap& tensors) {
  for (const auto& [k, _] : tensors)
    if (k.starts_with("encoder.down.") || k.starts_with("decoder.up.") || k.find(".mid.attn_1.") != std::string::npos)
      return VAEKeyDialect::LDM;
  for (const auto& [k, _] : tensors)
    if (k.find(".attentions.0.query.") != std::string::npos || k.find(".proj_attn.") != std::string::npos)
      return VAEKeyDialect::DiffusersOld;
  return VAEKeyDialect::Diffusers;
}

std::int64_t count_ldm_up_blocks(const TensorMap& tensors) {
  std::int64_t n = 0;
  for (const auto& [k, _] : tensors) {
    auto parts = split_key(k);
    if (parts.size() > 2 && parts[0] == "decoder" && parts[1] == "up" && index_of(parts[2]))
      n = std::max(n, *index_of(parts[2]) + 1);
  }
  return n;
}

struct Translated {
  TensorMap tensors;                          // diffusers names
  std::map<std::string, std::string> origin;  // diffusers name -> file name, where they differ
  VAEKeyDialect dialect = VAEKeyDialect::Diffusers;
};

Translated translate(const TensorMap& file) {
  const VAEPart part = vae_part(file);
  const TensorMap& source = part.tensors;
  Translated out;
  out.dialect = detect_dialect(source);
  std::vector<KeyRule> rules;
  if (out.dialect == VAEKeyDialect::LDM) rules.assign(std::begin(kLDMRules), std::end(kLDMRules));
  if (out.dialect == VAEKeyDialect::DiffusersOld)
    rules.assign(std::begin(kDiffusersOldRules), std::end(kDiffusersOldRules));
  const auto up_blocks = count_ldm_up_blocks(source);

  for (const auto& [key, value] : source) {
    if (out.dialect == VAEKeyDialect::LDM && key.starts_with("loss.")) continue;  // training loss, not the VAE
    std::string name = key;
    torch::Tensor t = value;
    for (const auto& rule : rules) {
      auto renamed = apply_rule(rule, key, up_blocks);
      if (renamed.empty()) continue;
      name = renamed;
      if (rule.linear && (t.dim() == 4 || t.dim() == 3) && t.size(2) == 1 && (t.dim() == 3 || t.size(3) == 1))
        t = t.reshape({t.size(0), t.size(1)});  // [C, C, 1, 1] -> [C, C]
      break;
    }
    const std::string file_key = part.prefix + key;
    if (name != file_key) out.origin[name] = file_key;
    if (!out.tensors.emplace(name, t).second)
      fail("VAE weights: '", file_key, "' and another key both map to '", name, "'");
  }
  return out;
}

const torch::Tensor* find(const TensorMap& t, const std::string& key) {
  auto it = t.find(key);
  return it == t.end() ? nullptr : &it->second;
}

}  // namespace

const char* dialect_name(VAEKeyDialect d) {
  switch (d) {
    case VAEKeyDialect::Diffusers: return "diffusers";
    case VAEKeyDialect::DiffusersOld: return "diffusers (old attention names)";
    case VAEKeyDialect::LDM: return "LDM";
  }
  return "?";
}

TensorMap vae_tensors_to_diffusers(const TensorMap& tensors, VAEKeyDialect* detected) {
  Translated t = translate(tensors);
  if (detected) *detected = t.dialect;
  return std::move(t.tensors);
}

void load_vae_state(AutoencoderKLImpl& vae, const TensorMap& tensors, const std::string& source) {
  Translated t = translate(tensors);
  load_translated_tensors(vae, t.tensors, t.origin, source + " (" + dialect_name(t.dialect) + " names)");
}

VAEConfig detect_vae_config(const TensorMap& tensors, const VAEConfig& base) {
  const Translated t = translate(tensors);
  const TensorMap& w = t.tensors;
  auto require = [&](const std::string& key, std::int64_t dims) -> const torch::Tensor& {
    const torch::Tensor* p = find(w, key);
    if (!p) fail("VAE weights (", dialect_name(t.dialect), " names): no '", key, "'; not an AutoencoderKL state dict");
    if (p->dim() != dims) fail("VAE weights: '", key, "' has shape ", p->sizes(), ", expected ", dims, " dimensions");
    return *p;
  };
  VAEConfig c = base;
  const auto& conv_in = require("encoder.conv_in.weight", 4);  // [C0, in, 3, 3]
  c.in_channels = conv_in.size(1);
  c.block_out_channels.clear();
  for (std::size_t i = 0;; ++i) {
    const auto* conv1 = find(w, "encoder.down_blocks." + std::to_string(i) + ".resnets.0.conv1.weight");
    if (!conv1) break;
    c.block_out_channels.push_back(conv1->size(0));
  }
  if (c.block_out_channels.empty()) require("encoder.down_blocks.0.resnets.0.conv1.weight", 4);
  c.layers_per_block = 0;
  while (find(w, "encoder.down_blocks.0.resnets." + std::to_string(c.layers_per_block) + ".conv1.weight"))
    ++c.layers_per_block;
  c.latent_channels = require("decoder.conv_in.weight", 4).size(1);  // [C_last, latent, 3, 3]
  c.out_channels = require("decoder.conv_out.weight", 4).size(0);    // [out, C0, 3, 3]
  const auto moments = require("encoder.conv_out.weight", 4).size(0);
  if (moments != 2 * c.latent_channels)
    fail("VAE weights: encoder.conv_out has ", moments, " output channels, expected 2 x latent channels (",
         c.latent_channels, ")");
  c.use_quant_conv = find(w, "quant_conv.weight") != nullptr;
  c.use_post_quant_conv = find(w, "post_quant_conv.weight") != nullptr;
  return c;
}

}  // namespace atelier
