#include "diffusion/model_file.h"

#include <algorithm>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "core/training_state.h"
#include "diffusion/dit_keys.h"

namespace atelier {

void save_dit_model(const std::filesystem::path& path, DiT& model, const DiTModelInfo& info, const json& config) {
  Metadata meta = {{"atelier.kind", "dit"},
                   {"dit.config", json_text(to_json(info.dit))},
                   {"diffusion.schedule", info.schedule},
                   {"diffusion.prediction", info.prediction},
                   {"diffusion.num_train_timesteps", std::to_string(info.num_train_timesteps)},
                   {"classes", json_text(info.class_names)},
                   {"data", json_text(info.data)},
                   {"atelier.config", json_text(config)}};
  safetensors::save(path, module_tensors(*model), meta);
}

DiT load_dit_model(const std::filesystem::path& path, DiTModelInfo* info) {
  TensorFile f = safetensors::load(path);
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(path.string(), ": not an Atelier DiT model (metadata '", key, "' missing)");
    return it->second;
  };
  DiTModelInfo i;
  auto parse = [&](const std::string& key) { return parse_json(get(key), path.string() + ": metadata '" + key + "'"); };
  i.dit = with_context([&] { return from_json<DiTConfig>(parse("dit.config")); }, path.string(), ": dit.config");
  i.schedule = get("diffusion.schedule");
  i.prediction = get("diffusion.prediction");
  i.num_train_timesteps = std::stoll(get("diffusion.num_train_timesteps"));
  i.class_names = string_list(parse("classes"), path.string() + ": metadata 'classes'");
  i.data = parse("data");
  DiT model(i.dit);
  load_module_tensors(*model, f.tensors, "", path.string());
  model->eval();
  if (info != nullptr) *info = std::move(i);
  return model;
}

DiT load_generator_model(const std::filesystem::path& path, DiTModelInfo* info) {
  if (detect_format(path) == FileFormat::Safetensors) {
    const safetensors::Reader reader(path);
    const auto& meta = reader.header().metadata;
    if (meta.count("dit.config") != 0 && meta.count("classes") != 0) return load_dit_model(path, info);
  }
  DiTFileInfo file;
  DiT model = load_dit(path, {}, &file);
  DiTModelInfo i;
  i.dit = file.config;
  for (std::int64_t k = 0; k < i.dit.num_classes; ++k) i.class_names.push_back(std::to_string(k));
  if (info != nullptr) *info = std::move(i);
  return model;
}

std::vector<std::int64_t> class_labels(const DiTModelInfo& info, const std::vector<std::string>& names,
                                       const std::string& field) {
  std::vector<std::int64_t> out;
  for (const auto& n : names) {
    const auto it = std::find(info.class_names.begin(), info.class_names.end(), n);
    if (it == info.class_names.end()) {
      std::string list;
      for (const auto& k : info.class_names) list += (list.empty() ? "" : ", ") + k;
      fail_field(field, "class '", n, "' is not a class of the model (", list, ")");
    }
    out.push_back(it - info.class_names.begin());
  }
  return out;
}

}  // namespace atelier
