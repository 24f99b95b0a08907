// DiT key dialects, config detection and loading.
// Ref: huggingface/diffusers@v0.42.1 src/diffusers/models/transformers/dit_transformer_2d.py,
// models/attention.py (BasicTransformerBlock), models/normalization.py (AdaLayerNormZero),
// models/embeddings.py (PatchEmbed, CombinedTimestepLabelEmbeddings, TimestepEmbedding, LabelEmbedding);
// facebookresearch/DiT@00d70ac models.py, train.py (checkpoint {"model", "ema", "opt", "args"}).
#include "diffusion/dit_keys.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <string_view>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_io.h"
#include "core/training_state.h"
#include "core/translated_load.h"

namespace atelier {
namespace {

enum class Op {
  Rename,
  Q,           // rows [0, D) of attn.qkv
  K,           // rows [D, 2D)
  V,           // rows [2D, 3D)
  Block0Copy,  // a block's copy of block 0's embedders: compared with block 0's, then dropped
};

// A rule renames the key prefix `diffusers` to `official`, segment by segment; "{n}" matches a block
// number, copied into `official`. The rest of the key (".weight", ".bias") is kept.
struct DiTKeyRule {
  const char* diffusers;
  const char* official;
  Op op = Op::Rename;
};

// Ref: DiTTransformer2DModel.__init__ (pos_embed, transformer_blocks, proj_out_1/2), BasicTransformerBlock
// with norm_type "ada_norm_zero" (norm1 = AdaLayerNormZero, attn1, ff = FeedForward("gelu-approximate")).
constexpr DiTKeyRule kDiffusersRules[] = {
    {"pos_embed.proj", "x_embedder.proj"},
    {"pos_embed.pos_embed", "pos_embed"},  // persistent only with pos_embed_max_size; usually absent
    {"transformer_blocks.0.norm1.emb.timestep_embedder.linear_1", "t_embedder.mlp.0"},
    {"transformer_blocks.0.norm1.emb.timestep_embedder.linear_2", "t_embedder.mlp.2"},
    {"transformer_blocks.0.norm1.emb.class_embedder.embedding_table", "y_embedder.embedding_table"},
    {"transformer_blocks.{n}.norm1.emb", "transformer_blocks.0.norm1.emb", Op::Block0Copy},
    {"transformer_blocks.{n}.norm1.linear", "blocks.{n}.adaLN_modulation.1"},
    {"transformer_blocks.{n}.attn1.to_q", "blocks.{n}.attn.qkv", Op::Q},
    {"transformer_blocks.{n}.attn1.to_k", "blocks.{n}.attn.qkv", Op::K},
    {"transformer_blocks.{n}.attn1.to_v", "blocks.{n}.attn.qkv", Op::V},
    {"transformer_blocks.{n}.attn1.to_out.0", "blocks.{n}.attn.proj"},
    {"transformer_blocks.{n}.ff.net.0.proj", "blocks.{n}.mlp.fc1"},
    {"transformer_blocks.{n}.ff.net.2", "blocks.{n}.mlp.fc2"},
    {"proj_out_1", "final_layer.adaLN_modulation.1"},
    {"proj_out_2", "final_layer.linear"},
};

bool is_number(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

struct Match {
  std::string name;   // the renamed key; empty: no match
  std::string block;  // what "{n}" matched
};

// Renames `key` when its leading segments match `from` ("{n}": a block number), writing `to`'s segments
// with the block number, then the rest of the key.
Match rename(const char* from, const char* to, const std::string& key) {
  const auto pattern = split_key(from), parts = split_key(key);
  if (parts.size() < pattern.size()) return {};
  Match m;
  for (std::size_t s = 0; s < pattern.size(); ++s) {
    if (pattern[s] == "{n}") {
      if (!is_number(parts[s])) return {};
      m.block = std::string(parts[s]);
    } else if (pattern[s] != parts[s]) {
      return {};
    }
  }
  for (auto seg : split_key(to)) {
    if (!m.name.empty()) m.name += '.';
    m.name.append(seg == "{n}" ? std::string_view(m.block) : seg);
  }
  for (std::size_t s = pattern.size(); s < parts.size(); ++s) m.name.append(".").append(parts[s]);
  return m;
}
Match apply_rule(const DiTKeyRule& rule, const std::string& key) {
  return rename(rule.diffusers, rule.official, key);
}
int qkv_block(Op op) {
  return op == Op::Q ? 0 : op == Op::K ? 1 : op == Op::V ? 2 : -1;
}
bool is_layer_rule(const DiTKeyRule& rule) {  // rules that rename a Linear/Conv2d (not a tensor or a copy)
  return rule.op != Op::Block0Copy && std::string_view(rule.official) != "pos_embed" &&
         std::string_view(rule.official) != "y_embedder.embedding_table";
}

struct Translated {
  TensorMap tensors;                          // official names
  std::map<std::string, std::string> origin;  // official name -> the file's name(s), where they differ
};

// The table applied to every key; pos_embed is not generated here.
Translated translate_diffusers(const TensorMap& in, std::vector<std::string>* warnings) {
  Translated out;
  std::map<std::string, std::array<torch::Tensor, 3>> qkv;  // official qkv key -> q, k, v
  std::map<std::string, std::array<std::string, 3>> qkv_from;
  std::set<std::pair<std::size_t, std::string>> differing;  // (length, number): blocks in numeric order
  auto keep = [&](const std::string& name, const torch::Tensor& t, const std::string& from) {
    if (name != from) out.origin[name] = from;
    if (!out.tensors.emplace(name, t).second) fail("diffusers DiT weights: two keys map to '", name, "'");
  };
  for (const auto& [key, value] : in) {
    Match m;
    const DiTKeyRule* rule = nullptr;
    for (const auto& r : kDiffusersRules) {
      m = apply_rule(r, key);
      if (m.name.empty() || (r.op == Op::Block0Copy && m.block == "0")) continue;
      rule = &r;
      break;
    }
    if (rule == nullptr) {
      keep(key, value, key);
    } else if (rule->op == Op::Rename) {
      keep(m.name, value, key);
    } else if (rule->op == Op::Block0Copy) {
      auto it = in.find(m.name);
      if (it == in.end()) {
        keep(key, value, key);  // nothing to compare with: reported as unexpected
      } else if (!it->second.sizes().equals(value.sizes()) || !torch::equal(it->second, value.to(it->second.dtype()))) {
        differing.emplace(m.block.size(), m.block);
      }
    } else {
      const int part = qkv_block(rule->op);
      qkv[m.name][part] = value;
      qkv_from[m.name][part] = key;
    }
  }
  for (const auto& [name, parts] : qkv) {
    const auto& from = qkv_from[name];
    bool ok = parts[0].defined() && parts[1].defined() && parts[2].defined();
    for (int i = 1; ok && i < 3; ++i)
      ok = parts[i].dim() == parts[0].dim() && parts[i].dim() >= 1 &&
           parts[i].sizes().slice(1).equals(parts[0].sizes().slice(1)) && parts[i].dtype() == parts[0].dtype();
    if (!ok) {  // left as they are: strict loading names them, and the missing qkv
      for (int i = 0; i < 3; ++i)
        if (parts[i].defined()) keep(from[i], parts[i], from[i]);
      continue;
    }
    keep(name, torch::cat({parts[0], parts[1], parts[2]}, 0), from[0] + "' + '" + from[1] + "' + '" + from[2]);
  }
  if (!differing.empty() && warnings != nullptr) {
    std::string list;
    for (const auto& [_, b] : differing) list += (list.empty() ? "" : ", ") + b;
    warnings->push_back("diffusers DiT weights: the timestep/class embedders of transformer_blocks " + list +
                        " differ from block 0's; DiT has one embedder, block 0's is used (diffusers uses each "
                        "block's own copy in that block), so outputs differ from diffusers'");
  }
  return out;
}

void add_pos_embed(TensorMap& official, const DiTConfig& c) {
  if (official.count("pos_embed") || c.patch_size <= 0 || c.input_size % c.patch_size != 0) return;
  official["pos_embed"] = sincos_pos_embed_2d(c.hidden_size, c.input_size / c.patch_size).unsqueeze(0);
}

const torch::Tensor& require(const TensorMap& w, const std::string& key, std::int64_t dims) {
  auto it = w.find(key);
  if (it == w.end()) fail("DiT weights: no '", key, "'; not a DiT state dict (official names)");
  if (it->second.dim() != dims)
    fail("DiT weights: '", key, "' has shape ", it->second.sizes(), ", expected ", dims, " dimensions");
  return it->second;
}

// sample_size and num_attention_heads of a diffusers DiT config.json next to the weights, if any.
void read_diffusers_config(const std::filesystem::path& weights, DiTConfig& c, bool heads, bool size) {
  const auto path = weights.parent_path() / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return;
  const json j = load_json_file(path);
  if (!j.is_object()) return;
  if (auto cls = j.find("_class_name");
      cls != j.end() && *cls != "DiTTransformer2DModel" && *cls != "Transformer2DModel")
    return;
  auto get = [&](const char* key, std::int64_t& field) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return;
    field = it->get<std::int64_t>();
  };
  if (heads) get("num_attention_heads", c.num_heads);
  if (size) get("sample_size", c.input_size);
}

}  // namespace

const char* dialect_name(DiTKeyDialect d) {
  switch (d) {
    case DiTKeyDialect::Official: return "official DiT";
    case DiTKeyDialect::Diffusers: return "diffusers";
  }
  return "?";
}

DiTKeyDialect detect_dit_dialect(const TensorMap& tensors) {
  for (const auto& [k, _] : tensors)
    if (k.starts_with("transformer_blocks.") || k.starts_with("pos_embed.proj.") || k.starts_with("proj_out_"))
      return DiTKeyDialect::Diffusers;
  return DiTKeyDialect::Official;
}

TensorMap dit_from_diffusers(const TensorMap& diffusers_state, const DiTConfig& config,
                             std::vector<std::string>* warnings) {
  TensorMap out = translate_diffusers(diffusers_state, warnings).tensors;
  add_pos_embed(out, config);
  return out;
}

std::int64_t dit_heads_for_width(std::int64_t hidden_size) {
  for (const auto& name : dit_preset_names()) {
    const DiTConfig p = dit_preset(name);
    if (p.hidden_size == hidden_size) return p.num_heads;
  }
  return std::max<std::int64_t>(1, hidden_size / 64);
}

DiTLayerTarget dit_layer_from_diffusers(const std::string& diffusers_layer) {
  for (const auto& r : kDiffusersRules) {
    if (!is_layer_rule(r)) continue;
    const Match m = apply_rule(r, diffusers_layer);
    if (!m.name.empty() && split_key(m.name).size() == split_key(r.official).size()) return {m.name, qkv_block(r.op)};
  }
  return {};
}

std::vector<std::string> dit_layer_to_diffusers(const std::string& official_layer) {
  std::vector<std::string> out;
  for (const auto& r : kDiffusersRules) {
    if (!is_layer_rule(r)) continue;
    const Match m = rename(r.official, r.diffusers, official_layer);
    if (!m.name.empty() && split_key(m.name).size() == split_key(r.diffusers).size()) out.push_back(m.name);
  }
  return out;
}

DiTConfig detect_dit_config(const TensorMap& w, const DiTConfig& base) {
  DiTConfig c = base;
  const auto& patch = require(w, "x_embedder.proj.weight", 4);  // [D, C, p, p]
  c.hidden_size = patch.size(0);
  c.in_channels = patch.size(1);
  c.patch_size = patch.size(2);
  if (patch.size(3) != c.patch_size) fail("DiT weights: x_embedder.proj.weight has non-square patches ", patch.sizes());
  require(w, "blocks.0.attn.qkv.weight", 2);
  c.depth = 0;  // 1 + the largest N of blocks.N.*, so a block's missing tensor is reported as missing
  for (const auto& [k, _] : w) {
    const auto parts = split_key(k);
    if (parts.size() > 2 && parts[0] == "blocks" && is_number(parts[1]) && parts[1].size() < 6)
      c.depth = std::max<std::int64_t>(c.depth, std::stoll(std::string(parts[1])) + 1);
  }
  const auto& fc1 = require(w, "blocks.0.mlp.fc1.weight", 2);  // [D * mlp_ratio, D]
  c.mlp_ratio = static_cast<double>(fc1.size(0)) / static_cast<double>(c.hidden_size);

  const auto& linear = require(w, "final_layer.linear.weight", 2);  // [p*p*out, D]
  const auto out = linear.size(0) / (c.patch_size * c.patch_size);
  if (out * c.patch_size * c.patch_size != linear.size(0) || (out != c.in_channels && out != 2 * c.in_channels))
    fail("DiT weights: final_layer.linear.weight has ", linear.size(0), " rows; expected patch^2 x ", c.in_channels,
         " or x ", 2 * c.in_channels, " (learn_sigma) = ", c.patch_size * c.patch_size * c.in_channels, " or ",
         2 * c.patch_size * c.patch_size * c.in_channels);
  c.learn_sigma = out == 2 * c.in_channels;
  c.final_conv = w.count("final_conv.weight") > 0;

  const auto rows = require(w, "y_embedder.embedding_table.weight", 2).size(0);  // [classes (+1 null), D]
  c.num_classes = base.class_dropout_prob > 0 ? rows - 1 : rows;
  if (c.num_classes < 1) fail("DiT weights: y_embedder.embedding_table.weight has ", rows, " rows");

  if (auto it = w.find("pos_embed"); it != w.end()) {
    const auto& pos = it->second;  // [1, (input_size / p)^2, D]
    const auto tokens = pos.dim() == 3 ? pos.size(1) : -1;
    const auto grid =
        static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<std::int64_t>(tokens, 0)))));
    if (tokens <= 0 || grid * grid != tokens)
      fail("DiT weights: pos_embed has shape ", pos.sizes(), "; expected [1, G*G, ", c.hidden_size, "] (square grid)");
    c.input_size = grid * c.patch_size;
  }
  c.num_heads = dit_heads_for_width(c.hidden_size);
  return c;
}

DiT load_dit(const std::filesystem::path& file, const DiTLoadOptions& options, DiTFileInfo* info) {
  const TensorFile f = load_tensor_file(file);
  DiTFileInfo i;
  for (const std::string prefix : {"ema.", "model."}) {
    if (std::any_of(f.tensors.begin(), f.tensors.end(), [&](const auto& kv) { return kv.first.starts_with(prefix); })) {
      i.prefix = prefix;
      break;
    }
  }
  const TensorMap source = i.prefix.empty() ? f.tensors : tensors_under(f.tensors, i.prefix);
  i.dialect = detect_dit_dialect(source);
  Translated t;
  if (i.dialect == DiTKeyDialect::Diffusers)
    t = translate_diffusers(source, &i.warnings);
  else
    t.tensors = source;

  if (auto meta = f.metadata.find("dit.config"); meta != f.metadata.end()) {
    i.config = with_context(
        [&] { return from_json<DiTConfig>(parse_json(meta->second, file.string() + ": metadata 'dit.config'")); },
        file.string(), ": metadata 'dit.config'");
  } else {
    DiTConfig base;
    base.timestep_freq_shift = i.dialect == DiTKeyDialect::Diffusers ? 1 : 0;
    if (options.input_size > 0) base.input_size = options.input_size;
    i.config = with_context([&] { return detect_dit_config(t.tensors, base); }, file.string());
    if (i.dialect == DiTKeyDialect::Diffusers)
      read_diffusers_config(file, i.config, options.num_heads <= 0,
                            options.input_size <= 0 && !t.tensors.count("pos_embed"));
  }
  if (options.num_heads > 0) i.config.num_heads = options.num_heads;
  add_pos_embed(t.tensors, i.config);

  DiT model = with_context([&] { return DiT(i.config); }, file.string());
  std::string what = file.string() + " (" + dialect_name(i.dialect) + " names";
  what += i.prefix.empty() ? ")" : ", '" + i.prefix + "' tensors)";
  load_translated_tensors(*model, t.tensors, t.origin, what);
  model->eval();
  if (info != nullptr) *info = std::move(i);
  return model;
}

}  // namespace atelier
