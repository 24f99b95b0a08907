#include "studio/model_ops.h"

#include <torch/torch.h>

#include <map>
#include <mutex>

#include "adapters/adapter_file.h"
#include "adapters/finetune.h"
#include "adapters/lora_files.h"
#include "adapters/tuning.h"
#include "data/folder_dataset.h"
#include "diffusion/model_file.h"
#include "diffusion/stable_diffusion.h"
#include "studio/job_registry.h"
#include "studio/workspace.h"

namespace atelier {
namespace fs = std::filesystem;

std::size_t fold_to_file(const fs::path& base, const std::vector<std::string>& adapters,
                         const std::vector<double>& weights, const fs::path& out) {
  DiTModelInfo info;
  std::vector<std::pair<LoRA, double>> loras;
  DiT model = load_adapted_model(base.string(), adapters, weights, &info, &loras);
  DiT plain = fold_adapters(model, loras);
  save_dit_model(out, plain, info, {{"base", base.string()}, {"adapters", adapters}, {"adapter_weights", weights}});
  return info.class_names.size();
}

LoRAConversion convert_lora_file(const fs::path& in, const fs::path& out, const std::string& dialect,
                                 const fs::path& base, const std::string& names) {
  const LoRADialect to = lora_dialect_by_name(dialect);
  if (is_stable_diffusion(base)) {  // no Atelier base hash: kohya <-> diffusers/PEFT, checked layer by layer
    if (to == LoRADialect::Atelier)
      fail("Atelier adapter files belong to Atelier DiT bases: convert a Stable Diffusion LoRA to peft or kohya");
    StableDiffusion sd = load_stable_diffusion(base, {}).model;
    LoRAWeights lora = read_lora_file(in, lora_layer_paths(*sd));
    to_lora(lora, *sd, in.string());  // refuses files that do not fit the base
    write_lora_file(out, lora, to);
    return {lora_dialect_name(lora.dialect), "model", lora.layers.size()};
  }
  if (!names.empty() && names != "model" && names != "diffusers")
    fail("layer names '", names, "' are not one of: model, diffusers");
  if (names == "diffusers" && to == LoRADialect::Atelier)
    fail("Atelier adapter files name the model's own layers: --names diffusers needs --to peft or kohya");
  DiTModelInfo info;
  DiT model = load_generator_model(base, &info);
  LoRAWeights lora = read_lora_file(in, lora_layer_paths(*model));
  to_lora(lora, *model, in.string());  // refuses files that do not fit the base
  const std::string from_names = lora.diffusers_names ? "diffusers" : "model";
  if (!names.empty()) lora.diffusers_names = names == "diffusers";
  AdapterInfo a = lora.atelier;
  a.base_hash = model_hash(*model);
  if (a.classes.empty()) a.classes = info.class_names;
  if (a.settings.is_null() || a.settings.empty()) a.settings = {{"input_size", model->config().input_size}};
  write_lora_file(out, lora, to, a);
  return {lora_dialect_name(lora.dialect), from_names, lora.layers.size()};
}

json lora_compatibility(const fs::path& file, const fs::path& base) {
  std::shared_ptr<torch::nn::Module> model;
  if (is_stable_diffusion(base)) {
    model = load_stable_diffusion(base, {}).model.ptr();  // UNet and text encoder: unet.*, text_encoder.*
  } else {
    DiTModelInfo info;
    model = load_generator_model(base, &info).ptr();
  }
  const LoRAWeights lora = read_lora_file(file, lora_layer_paths(*model));
  const LoRACompatibility c = check_lora(lora, *model);
  return {{"file", file.string()},
          {"base", base.string()},
          {"dialect", lora_dialect_name(lora.dialect)},
          {"names", lora.diffusers_names ? "diffusers" : "model"},
          {"layers", lora.layers.size() + lora.unresolved.size()},
          {"matched", c.matched},
          {"unmatched", c.unmatched},
          {"mismatched", c.mismatched}};
}

std::string compatibility_report(const fs::path& file, const fs::path& base) {
  std::string out;
  if (is_adapter_file(file)) {
    DiTModelInfo info;
    DiT model = load_generator_model(base, &info);
    const ModelFileInfo a = read_model_file_info(file);
    const std::string hash = model_hash(*model);
    out += file.string() + ": " + a.method + " adapter\n";
    out += a.base_hash == hash ? "  base model: matches " + base.string() + "\n"
                               : "  base model: MISMATCH - trained for " + a.base_hash.substr(0, 12) + "..., " +
                                     base.string() + " is " + hash.substr(0, 12) + "...\n";
    if (!a.adapter_method || !carries_lora(*a.adapter_method)) return out;
  }
  const json c = lora_compatibility(file, base);
  out += file.string() + ": " + c["dialect"].get<std::string>() + " LoRA" +
         (c["names"] == "diffusers" ? " with diffusers DiT layer names (to_q/to_k/to_v joined on attn.qkv)" : "") +
         ", " + c["layers"].dump() + " layer(s) against " + base.string() + "\n";
  auto section = [&](const char* title, const json& names) {
    out += std::string("  ") + title + std::to_string(names.size()) + "\n";
    for (const auto& n : names) out += "    " + n.get<std::string>() + "\n";
  };
  section("matched:    ", c["matched"]);
  section("unmatched:  ", c["unmatched"]);
  section("mismatched: ", c["mismatched"]);
  return out;
}

namespace {

bool is_dit_preset(const std::string& name) {
  const auto names = dit_preset_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

void check_exists(const std::string& field, const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_field(field, path, " does not exist");
}

// The SHA-256 of a model file's weights, cached by path and modification time (forms re-check on each edit).
std::string cached_model_hash(const std::string& path, const std::string& field) {
  static std::mutex mutex;
  static std::map<std::string, std::pair<fs::file_time_type, std::string>> cache;
  std::error_code ec;
  const auto mtime = fs::last_write_time(path, ec);
  {
    std::lock_guard lock(mutex);
    auto it = cache.find(path);
    if (!ec && it != cache.end() && it->second.first == mtime) return it->second.second;
  }
  DiTModelInfo info;
  DiT base = with_field(field, [&] { return load_generator_model(path, &info); });
  std::string hash = model_hash(*base);
  std::lock_guard lock(mutex);
  cache[path] = {mtime, hash};
  return hash;
}

}  // namespace

void check_job_inputs(const JobKind& kind, const json& effective) {
  std::string model_field, model;
  std::vector<std::pair<std::string, std::string>> adapters;  // (field, path)
  std::vector<std::pair<std::string, std::string>> classes;   // (field, name)
  for (const auto& f : kind.fields) {
    if (!f.input || !effective.contains(f.name)) continue;
    const json& value = effective.at(f.name);
    std::vector<std::string> paths;
    if (value.is_string() && !value.get<std::string>().empty()) paths.push_back(value.get<std::string>());
    if (value.is_array())
      for (const auto& v : value)
        if (v.is_string()) paths.push_back(v.get<std::string>());
    for (const auto& path : paths) {
      switch (*f.input) {
        case Input::File: check_exists(f.name, path); break;
        case Input::ImageFolder: with_field(f.name, [&] { (void)FolderDataset::scan(path); }); break;
        case Input::Folder:
          check_exists(f.name, path);
          if (!fs::is_directory(path)) fail_field(f.name, path, " is not a folder");
          break;
        case Input::Model:
          if (is_dit_preset(path)) break;  // a preset name (random weights) where the job allows one
          check_exists(f.name, path);
          model_field = f.name;
          model = path;
          break;
        case Input::Adapters:
          check_exists(f.name, path);
          adapters.emplace_back(f.name, path);
          break;
        case Input::Classes: classes.emplace_back(f.name, path); break;
        case Input::Text: break;
      }
    }
  }
  if (model.empty()) return;
  // Stable Diffusion (a checkpoint or a folder): its LoRA files are matched layer by layer by the job.
  if (is_stable_diffusion(model)) return;
  if (!classes.empty()) {
    const ModelFileInfo m = read_model_file_info(model);
    for (const auto& [field, name] : classes) {
      if (m.classes.empty() || std::find(m.classes.begin(), m.classes.end(), name) != m.classes.end()) continue;
      std::string list;
      for (const auto& c : m.classes) list += (list.empty() ? "" : ", ") + c;
      fail_field(field, "'", name, "' is not a class of ", fs::path(model).filename().string(), " (its classes: ", list,
                 ")");
    }
  }
  if (adapters.empty()) return;
  const std::string hash = cached_model_hash(model, model_field);
  for (const auto& [field, path] : adapters) {
    if (!is_adapter_file(path)) continue;  // PEFT/kohya LoRA files are matched layer by layer by the job
    const ModelFileInfo a = read_model_file_info(path);
    if (a.base_hash == hash) continue;
    // Name the base the adapter was trained on by its file (from the job config the adapter carries).
    std::string trained_on;
    if (auto it = a.metadata.find("atelier.config"); it != a.metadata.end()) {
      const json config = json::parse(it->second, nullptr, false);
      for (const char* key : {"base", "model", "teacher"})
        if (config.is_object() && config.contains(key) && config[key].is_string()) {
          trained_on = config[key].get<std::string>();
          break;
        }
    }
    fail_field(field, fs::path(path).filename().string(), " (", path, ") was trained on another base model",
               trained_on.empty() ? std::string() : " (" + trained_on + ")", ", not on ", model,
               ": pick the base it was trained on");
  }
}

}  // namespace atelier
