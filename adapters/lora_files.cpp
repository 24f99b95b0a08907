#include "adapters/lora_files.h"

#include <array>
#include <cmath>
#include <optional>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "diffusion/dit_keys.h"

namespace atelier {
namespace {

// The key-map table: how each dialect names a layer's tensors.
struct DialectKeys {
  LoRADialect dialect;
  const char* name;
  const char* prefix;  // before the layer path when writing
  const char* down;
  const char* up;
  const char* alpha;  // scalar tensor suffix, or nullptr
  bool underscored;   // dots of the path written as underscores
};
constexpr DialectKeys kDialects[] = {
    {LoRADialect::Atelier, "atelier", "", ".lora_A.weight", ".lora_B.weight", ".alpha", false},
    {LoRADialect::PEFT, "peft", "base_model.model.", ".lora_A.weight", ".lora_B.weight", nullptr, false},
    {LoRADialect::Kohya, "kohya", "lora_unet_", ".lora_down.weight", ".lora_up.weight", ".alpha", true},
};
const DialectKeys& keys_of(LoRADialect d) {
  for (const auto& k : kDialects)
    if (k.dialect == d) return k;
  fail("unknown LoRA dialect");
}
// Prefixes accepted on reading PEFT-style and kohya names.
constexpr const char* kPeftPrefixes[] = {"base_model.model.", "transformer.", "unet.", ""};
// A kohya prefix and what it stands for in the model's (underscored) layer paths: a model holding a Stable
// Diffusion UNet and text encoder as children "unet" and "text_encoder" gets lora_unet_ / lora_te_ names.
constexpr std::pair<const char*, const char*> kKohyaPrefixes[] = {{"lora_unet_", ""},
                                                                  {"lora_unet_", "unet_"},
                                                                  {"lora_te_", "text_encoder_"},
                                                                  {"lora_te1_", "text_encoder_"},
                                                                  {"lora_transformer_", ""},
                                                                  {"transformer_", ""},
                                                                  {"", ""}};
// Writing kohya names: a layer under "unet." or "text_encoder." takes that part's prefix.
constexpr std::pair<const char*, const char*> kKohyaParts[] = {{"unet.", "lora_unet_"}, {"text_encoder.", "lora_te_"}};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
std::string underscored(std::string s) {
  for (auto& c : s)
    if (c == '.') c = '_';
  return s;
}

LoRADialect detect(const TensorFile& f, const std::filesystem::path& path) {
  if (auto it = f.metadata.find("atelier.kind"); it != f.metadata.end() && it->second == "adapter")
    return LoRADialect::Atelier;
  for (const auto& [name, t] : f.tensors) {
    if (ends_with(name, ".lora_down.weight")) return LoRADialect::Kohya;
    if (ends_with(name, ".lora_A.weight")) return LoRADialect::PEFT;
  }
  fail(path.string(), ": no LoRA tensors (neither <layer>.lora_A/lora_B nor kohya lora_down/lora_up names)");
}

// PEFT's per-layer rank/alpha patterns: a key matches a layer path by suffix, as PEFT does.
double pattern_value(const json& patterns, const std::string& path, double fallback) {
  if (!patterns.is_object()) return fallback;
  for (auto it = patterns.begin(); it != patterns.end(); ++it)
    if (matches_target(path, it.key()) && it.value().is_number()) return it.value().get<double>();
  return fallback;
}

// The layer names a file may use for a model: its own paths, for a DiT the diffusers names (to_q / to_k /
// to_v: row blocks of attn.qkv), and a CLIP text encoder's paths without "text_model.".
struct LayerNames {
  std::map<std::string, DiTLayerTarget> names;  // file layer path -> model layer (and qkv block)
  std::set<std::string> text_aliases;           // of those, the CLIP paths without "text_model."
  explicit LayerNames(const std::vector<std::string>& layer_paths) {
    for (const auto& p : layer_paths) {
      names[p] = {p, -1};
      // transformers 5 names a CLIP text model's layers without "text_model." (encoder.layers.N...).
      if (const auto at = p.find("text_model."); at != std::string::npos && (at == 0 || p[at - 1] == '.'))
        if (names.emplace(p.substr(0, at) + p.substr(at + std::strlen("text_model.")), DiTLayerTarget{p, -1}).second)
          text_aliases.insert(p.substr(0, at) + p.substr(at + std::strlen("text_model.")));
      const auto diffusers = dit_layer_to_diffusers(p);
      for (std::size_t i = 0; i < diffusers.size(); ++i)
        names.emplace(diffusers[i], DiTLayerTarget{p, diffusers.size() == 3 ? static_cast<int>(i) : -1});
    }
  }
  const DiTLayerTarget* find(const std::string& path) const {
    auto it = names.find(path);
    return it == names.end() ? nullptr : &it->second;
  }
};

// q / k / v LoRAs of one attn.qkv, each scaled by its alpha / rank, as one LoRA of summed rank with a
// block-diagonal up (scale 1). Throws naming the file when the parts disagree on shapes.
LoRALayerWeights join_qkv(const std::array<std::optional<LoRALayerWeights>, 3>& parts, const std::string& layer,
                          const std::filesystem::path& path) {
  std::int64_t rank = 0, rows = -1, in = -1;
  for (const auto& p : parts) {
    if (!p) continue;
    if ((rows >= 0 && p->up.size(0) != rows) || (in >= 0 && p->down.size(1) != in) || p->down.dim() != 2)
      fail(path.string(), ": the to_q / to_k / to_v LoRAs of ", layer, " disagree on their shapes");
    rows = p->up.size(0), in = p->down.size(1), rank += p->down.size(0);
  }
  std::vector<torch::Tensor> downs;
  torch::Tensor up = torch::zeros({3 * rows, rank}, torch::kFloat);
  std::int64_t col = 0;
  for (int b = 0; b < 3; ++b) {
    const auto& p = parts[b];
    if (!p) continue;
    const std::int64_t r = p->down.size(0);
    downs.push_back(p->down.to(torch::kFloat));
    up.slice(0, b * rows, (b + 1) * rows).slice(1, col, col + r).copy_(p->up.to(torch::kFloat) * (p->alpha / r));
    col += r;
  }
  return {torch::cat(downs, 0), up, static_cast<double>(rank)};
}

// PEFT's LoraConfig of `layers` (paths as the config names them): one r and lora_alpha (the first
// layer's), layers that differ in rank_pattern / alpha_pattern.
json peft_config(const std::vector<std::pair<std::string, const LoRALayerWeights*>>& layers) {
  const LoRALayerWeights& first = *layers.front().second;
  const auto r = first.down.size(0);
  json config = {{"peft_type", "LORA"},
                 {"r", r},
                 {"lora_alpha", first.alpha},
                 {"use_rslora", false},
                 {"lora_dropout", 0.0},
                 {"bias", "none"},
                 {"fan_in_fan_out", false},
                 {"target_modules", json::array()},
                 {"rank_pattern", json::object()},
                 {"alpha_pattern", json::object()}};
  for (const auto& [layer, w] : layers) {
    config["target_modules"].push_back(layer);
    if (w->down.size(0) != r) config["rank_pattern"][layer] = w->down.size(0);
    if (w->alpha != first.alpha) config["alpha_pattern"][layer] = w->alpha;
  }
  return config;
}

// The layers under their diffusers DiT names; attn.qkv splits into to_q / to_k / to_v with the same down
// and up's row blocks (exact). Layers diffusers lacks keep their names.
LoRAWeights with_diffusers_names(const LoRAWeights& lora) {
  LoRAWeights out = lora;
  out.diffusers_names = false;
  out.layers.clear();
  for (const auto& [layer, w] : lora.layers) {
    const auto names = dit_layer_to_diffusers(layer);
    if (names.size() == 3) {
      const std::int64_t rows = w.up.size(0) / 3;
      for (std::int64_t b = 0; b < 3; ++b)
        out.layers[names[b]] = {w.down, w.up.slice(0, b * rows, (b + 1) * rows).contiguous(), w.alpha};
    } else {
      out.layers[names.size() == 1 ? names[0] : layer] = w;
    }
  }
  return out;
}

}  // namespace

const char* lora_dialect_name(LoRADialect d) {
  return keys_of(d).name;
}

LoRADialect lora_dialect_by_name(const std::string& name) {
  for (const auto& k : kDialects)
    if (name == k.name) return k.dialect;
  fail("LoRA dialect '", name, "' is not one of: atelier, peft, kohya");
}

std::vector<std::string> lora_layer_paths(torch::nn::Module& model) {
  std::vector<std::string> out;
  for (auto& item : model.named_modules("", /*include_self=*/false))
    if (item.value()->as<torch::nn::Linear>() || item.value()->as<torch::nn::Conv2d>()) out.push_back(item.key());
  return out;
}

LoRAWeights read_lora_file(const std::filesystem::path& path, const std::vector<std::string>& layer_paths) {
  TensorFile f = load_tensor_file(path);
  LoRAWeights w;
  w.dialect = detect(f, path);
  const DialectKeys& k = keys_of(w.dialect);
  if (w.dialect == LoRADialect::Atelier) w.atelier = load_adapter(path).info;

  // PEFT scales: adapter_config.json beside the file, else the adapters' configs diffusers'
  // save_lora_weights keeps in the file's "lora_adapter_metadata" (keys "<part>.lora_alpha", ...).
  json config = json::object();
  std::map<std::string, json> part_configs;  // "unet." / "text_encoder." -> that part's config
  if (w.dialect == LoRADialect::PEFT) {
    const auto config_path = path.parent_path() / "adapter_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(config_path, ec)) {
      config = load_json_file(config_path);
    } else if (auto it = f.metadata.find("lora_adapter_metadata"); it != f.metadata.end()) {
      const json meta = json::parse(it->second, nullptr, false);
      if (!meta.is_object()) fail(path.string(), ": lora_adapter_metadata is not a JSON object");
      for (auto m = meta.begin(); m != meta.end(); ++m) {
        const auto dot = m.key().find('.');
        if (dot == std::string::npos)
          config[m.key()] = m.value();
        else
          part_configs[m.key().substr(0, dot + 1)][m.key().substr(dot + 1)] = m.value();
      }
    }
  }
  auto config_for = [&](const std::string& stem) -> const json& {
    for (const auto& [part, c] : part_configs)
      if (stem.rfind(part, 0) == 0) return c;
    return config;
  };
  const LayerNames names(layer_paths);
  std::map<std::string, std::string> kohya_paths;  // <underscored> -> file layer path
  for (const auto& [name, target] : names.names) kohya_paths[underscored(name)] = name;
  std::map<std::string, std::array<std::optional<LoRALayerWeights>, 3>> qkv;  // model layer -> q, k, v

  for (const auto& [name, down] : f.tensors) {
    if (!ends_with(name, k.down)) continue;
    const std::string stem = name.substr(0, name.size() - std::strlen(k.down));
    auto up = f.tensors.find(stem + k.up);
    if (up == f.tensors.end()) fail(path.string(), ": '", name, "' has no matching '", stem, k.up, "'");
    std::string layer;
    if (w.dialect == LoRADialect::Kohya) {
      for (const auto& [prefix, part] : kKohyaPrefixes) {
        const std::string p = prefix;
        if (stem.rfind(p, 0) != 0) continue;
        if (auto it = kohya_paths.find(part + stem.substr(p.size())); it != kohya_paths.end()) {
          layer = it->second;
          break;
        }
      }
      if (layer.empty()) {
        w.unresolved.push_back(stem);
        continue;
      }
    } else if (w.dialect == LoRADialect::PEFT) {
      layer = stem;
      for (const char* prefix : kPeftPrefixes) {
        const std::string p = prefix;
        if (stem.rfind(p, 0) != 0) continue;
        const std::string candidate = stem.substr(p.size());
        if (layer_paths.empty() || names.find(candidate) != nullptr) {
          layer = candidate;
          break;
        }
      }
    } else {
      layer = stem;
    }
    LoRALayerWeights lw{down, up->second, static_cast<double>(down.size(0))};
    const double rank = static_cast<double>(down.size(0));
    if (k.alpha != nullptr) {
      if (auto a = f.tensors.find(stem + k.alpha); a != f.tensors.end()) lw.alpha = a->second.item<double>();
    } else if (const json& c = config_for(stem); c.contains("lora_alpha")) {
      const double alpha = pattern_value(c.value("alpha_pattern", json::object()), layer, c.value("lora_alpha", rank));
      const double scale = c.value("use_rslora", false) ? alpha / std::sqrt(rank) : alpha / rank;
      lw.alpha = scale * rank;
    }
    // diffusers DiT names: renamed to the model's layer, q / k / v kept apart until all are read.
    const DiTLayerTarget* target = names.find(layer);
    if (target != nullptr && target->path != layer) {
      if (names.text_aliases.count(layer) == 0) w.diffusers_names = true;
      if (target->qkv_block >= 0) {
        qkv[target->path][target->qkv_block] = lw;
        continue;
      }
      layer = target->path;
    }
    if (!w.layers.emplace(layer, lw).second)
      fail(path.string(), ": two LoRAs for layer ", layer, " (its own name and its diffusers name)");
  }
  for (const auto& [layer, parts] : qkv)
    if (!w.layers.emplace(layer, join_qkv(parts, layer, path)).second)
      fail(path.string(), ": LoRAs for ", layer, " both fused and as to_q / to_k / to_v");
  if (w.layers.empty() && w.unresolved.empty()) fail(path.string(), ": no LoRA layers found");
  return w;
}

void write_lora_file(const std::filesystem::path& path, const LoRAWeights& lora, LoRADialect dialect,
                     const AdapterInfo& info) {
  if (lora.diffusers_names && dialect != LoRADialect::Atelier) {
    write_lora_file(path, with_diffusers_names(lora), dialect, info);
    return;
  }
  const DialectKeys& k = keys_of(dialect);
  TensorMap out;
  for (const auto& [layer, w] : lora.layers) {
    std::string stem = k.prefix + (k.underscored ? underscored(layer) : layer);
    if (dialect == LoRADialect::Kohya)
      for (const auto& [part, prefix] : kKohyaParts)
        if (layer.rfind(part, 0) == 0) stem = prefix + underscored(layer.substr(std::strlen(part)));
    out[stem + k.down] = w.down.contiguous();
    out[stem + k.up] = w.up.contiguous();
    if (k.alpha != nullptr) out[stem + k.alpha] = torch::tensor(static_cast<float>(w.alpha));
  }
  if (dialect == LoRADialect::Atelier) {
    if (info.base_hash.empty()) fail("an Atelier LoRA file needs its base model (base hash)");
    AdapterInfo a = info;
    a.method = AdapterMethod::LoRA;
    save_adapter(path, out, a);
    return;
  }
  if (dialect == LoRADialect::PEFT) {
    // A model of parts (Stable Diffusion: unet., text_encoder.): diffusers' format, the names as they are
    // and each part's config in the file's "lora_adapter_metadata" ("unet.r", "unet.lora_alpha", ...).
    std::map<std::string, std::vector<std::pair<std::string, const LoRALayerWeights*>>> parts;
    for (const auto& [layer, w] : lora.layers)
      for (const auto& [part, prefix] : kKohyaParts)
        if (layer.rfind(part, 0) == 0) parts[part].emplace_back(layer.substr(std::strlen(part)), &w);
    if (!parts.empty()) {
      TensorMap named;
      for (const auto& [layer, w] : lora.layers) {
        named[layer + k.down] = w.down.contiguous();
        named[layer + k.up] = w.up.contiguous();
      }
      json meta = json::object();
      for (const auto& [part, layers] : parts) {
        const json config = peft_config(layers);
        for (auto it = config.begin(); it != config.end(); ++it) meta[part + it.key()] = it.value();
      }
      safetensors::save(path, named, {{"lora_adapter_metadata", meta.dump()}, {"format", "pt"}});
      return;
    }
    std::vector<std::pair<std::string, const LoRALayerWeights*>> layers;
    for (const auto& [layer, w] : lora.layers) layers.emplace_back(layer, &w);
    safetensors::save(path, out);
    write_file_atomic(path.parent_path() / "adapter_config.json", peft_config(layers).dump(2) + "\n");
    return;
  }
  safetensors::save(path, out, {{"ss_network_module", "networks.lora"}});
}

LoRACompatibility check_lora(const LoRAWeights& lora, torch::nn::Module& model) {
  LoRACompatibility c;
  std::map<std::string, torch::nn::Module*> layers;
  for (auto& item : model.named_modules("", false))
    if (item.value()->as<torch::nn::Linear>() || item.value()->as<torch::nn::Conv2d>())
      layers[item.key()] = item.value().get();
  for (const auto& u : lora.unresolved) c.unmatched.push_back(u);
  for (const auto& [path, w] : lora.layers) {
    auto it = layers.find(path);
    if (it == layers.end()) {
      c.unmatched.push_back(path);
      continue;
    }
    LoRALayer probe(*it->second, LoRAOptions{w.down.size(0), w.alpha, 0.0}, path);
    if (probe->down.sizes() != w.down.sizes() || probe->up.sizes() != w.up.sizes())
      c.mismatched.push_back(path + ": file down " + c10::str(w.down.sizes()) + " up " + c10::str(w.up.sizes()) +
                             ", layer needs " + c10::str(probe->down.sizes()) + " / " + c10::str(probe->up.sizes()));
    else
      c.matched.push_back(path);
  }
  return c;
}

LoRA to_lora(const LoRAWeights& lora, torch::nn::Module& model, const std::string& source) {
  const auto compat = check_lora(lora, model);
  if (!compat.ok()) {
    std::string msg;
    for (const auto& u : compat.unmatched) msg += "\n  no such layer: " + u;
    for (const auto& m : compat.mismatched) msg += "\n  shape mismatch: " + m;
    fail(source, ": ", compat.unmatched.size() + compat.mismatched.size(), " LoRA layer(s) do not fit the model:", msg);
  }
  LoRA out;
  for (const auto& [path, w] : lora.layers) {
    LoRALayer layer(layer_at(model, path), LoRAOptions{w.down.size(0), w.alpha, 0.0}, path);
    torch::NoGradGuard no_grad;
    layer->down.copy_(w.down);
    layer->up.copy_(w.up);
    out.add_layer(path, layer);
  }
  return out;
}

LoRAWeights from_lora(const LoRA& lora) {
  LoRAWeights w;
  for (std::size_t i = 0; i < lora.paths().size(); ++i) {
    const auto& l = lora.layers()[i];
    w.layers[lora.paths()[i]] = {l->down.detach(), l->up.detach(), l->alpha()};
  }
  return w;
}

void merge_lora_files(torch::nn::Module& model, const std::vector<std::string>& files,
                      const std::vector<double>& weights) {
  if (!weights.empty() && weights.size() != files.size())
    fail_field("adapter_weights", weights.size(), " weights for ", files.size(), " adapters");
  const auto paths = lora_layer_paths(model);
  for (std::size_t k = 0; k < files.size(); ++k) {
    const LoRAWeights w = with_field("adapters", [&] { return read_lora_file(files[k], paths); });
    const LoRA lora = with_field("adapters", [&] { return to_lora(w, model, files[k]); });
    lora.merge(model, weights.empty() ? 1.0 : weights[k]);
  }
}

}  // namespace atelier
