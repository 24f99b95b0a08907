#include "adapters/lora_files.h"

#include <cmath>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"

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
// Prefixes accepted on reading PEFT-style names.
constexpr const char* kPeftPrefixes[] = {"base_model.model.", "transformer.", "unet.", ""};

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

  json config = json::object();
  if (w.dialect == LoRADialect::PEFT) {
    const auto config_path = path.parent_path() / "adapter_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(config_path, ec)) config = load_json_file(config_path);
  }
  std::map<std::string, std::string> kohya_paths;  // lora_unet_<underscored> -> path
  for (const auto& p : layer_paths) kohya_paths[std::string(k.prefix) + underscored(p)] = p;

  for (const auto& [name, down] : f.tensors) {
    if (!ends_with(name, k.down)) continue;
    const std::string stem = name.substr(0, name.size() - std::strlen(k.down));
    auto up = f.tensors.find(stem + k.up);
    if (up == f.tensors.end()) fail(path.string(), ": '", name, "' has no matching '", stem, k.up, "'");
    std::string layer;
    if (w.dialect == LoRADialect::Kohya) {
      auto it = kohya_paths.find(stem);
      if (it == kohya_paths.end()) {
        w.unresolved.push_back(stem);
        continue;
      }
      layer = it->second;
    } else if (w.dialect == LoRADialect::PEFT) {
      layer = stem;
      for (const char* prefix : kPeftPrefixes) {
        const std::string p = prefix;
        if (stem.rfind(p, 0) != 0) continue;
        const std::string candidate = stem.substr(p.size());
        if (layer_paths.empty() || std::find(layer_paths.begin(), layer_paths.end(), candidate) != layer_paths.end()) {
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
    } else if (config.contains("lora_alpha")) {
      const double alpha =
          pattern_value(config.value("alpha_pattern", json::object()), layer, config.value("lora_alpha", rank));
      const double scale = config.value("use_rslora", false) ? alpha / std::sqrt(rank) : alpha / rank;
      lw.alpha = scale * rank;
    }
    w.layers[layer] = lw;
  }
  if (w.layers.empty() && w.unresolved.empty()) fail(path.string(), ": no LoRA layers found");
  return w;
}

void write_lora_file(const std::filesystem::path& path, const LoRAWeights& lora, LoRADialect dialect,
                     const AdapterInfo& info) {
  const DialectKeys& k = keys_of(dialect);
  TensorMap out;
  for (const auto& [layer, w] : lora.layers) {
    const std::string stem = k.prefix + (k.underscored ? underscored(layer) : layer);
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
    // One r and lora_alpha for the file; layers that differ go into rank_pattern / alpha_pattern.
    const auto& first = lora.layers.begin()->second;
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
    for (const auto& [layer, w] : lora.layers) {
      config["target_modules"].push_back(layer);
      if (w.down.size(0) != r) config["rank_pattern"][layer] = w.down.size(0);
      if (w.alpha != first.alpha) config["alpha_pattern"][layer] = w.alpha;
    }
    safetensors::save(path, out);
    write_file_atomic(path.parent_path() / "adapter_config.json", config.dump(2) + "\n");
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

}  // namespace atelier
