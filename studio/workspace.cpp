#include "studio/workspace.h"

#include <torch/torch.h>

#include <algorithm>

#include "adapters/adapter_file.h"
#include "adapters/lora_files.h"
#include "core/atomic_file.h"
#include "core/folder_dataset.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "core/shapes.h"
#include "diffusion/generate.h"
#include "diffusion/train_base.h"
#include "studio/runner.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> json_list(const std::map<std::string, std::string>& meta, const std::string& key) {
  auto it = meta.find(key);
  if (it == meta.end()) return {};
  json j = json::parse(it->second, nullptr, false);
  if (!j.is_array()) return {};
  std::vector<std::string> out;
  for (const auto& v : j)
    if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

std::string meta_or(const std::map<std::string, std::string>& meta, const std::string& key, std::string fallback) {
  auto it = meta.find(key);
  return it == meta.end() ? fallback : it->second;
}

}  // namespace

ModelFileInfo read_model_file_info(const fs::path& path) {
  ModelFileInfo info;
  info.path = path;
  try {
    info.bytes = fs::file_size(path);
    const safetensors::Reader reader(path);
    const auto& h = reader.header();
    info.metadata = h.metadata;
    info.tensors = h.entries.size();
    for (const auto& e : h.entries) {
      std::int64_t n = 1;
      for (auto d : e.shape) n *= d;
      info.parameters += n;
    }
    const std::string kind = meta_or(h.metadata, "atelier.kind", "");
    if (kind == "adapter") {
      info.kind = "adapter";
      info.method = meta_or(h.metadata, "adapter.method", "?");
      info.base_hash = meta_or(h.metadata, "adapter.base", "");
      info.classes = json_list(h.metadata, "adapter.classes");
    } else if (kind == "dit") {
      info.kind = "dit";
      info.classes = json_list(h.metadata, "classes");
    } else if (!kind.empty()) {
      info.kind = kind;
      info.classes = json_list(h.metadata, "classes");
    } else if (h.metadata.count("ss_network_dim") || (!h.entries.empty() && h.entries[0].name.rfind("lora_", 0) == 0)) {
      info.kind = "lora (kohya)";
    } else if (!h.entries.empty() && h.entries[0].name.find("lora_A") != std::string::npos) {
      info.kind = "lora (peft)";
    } else {
      info.kind = "safetensors";
    }
  } catch (const std::exception& e) {
    info.error = e.what();
  }
  return info;
}

std::vector<ModelFileInfo> scan_model_files(const std::vector<fs::path>& roots) {
  std::vector<fs::path> files;
  for (const auto& root : roots) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (it->is_directory() && it->path().filename() == "checkpoints") {
        it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file() && it->path().extension() == ".safetensors")
        files.push_back(it->path().lexically_normal());
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  std::vector<ModelFileInfo> out;
  for (const auto& f : files) out.push_back(read_model_file_info(f));
  return out;
}

ImageFolderInfo scan_image_folder(const fs::path& root) {
  const FolderDataset ds = FolderDataset::scan(root);
  ImageFolderInfo info;
  info.root = root;
  if (ds.classes().size() > 1 || (ds.classes().size() == 1 && !ds.classes()[0].empty())) info.classes = ds.classes();
  for (const auto& item : ds.items()) info.items.push_back({item.image, static_cast<int>(item.label), item.caption});
  return info;
}

const std::vector<ShapesPreset>& shapes_presets() {
  static const std::vector<ShapesPreset> presets = {
      {"base classes", "the 8 base shapes at any rotation, flat style, plain backgrounds", json::object()},
      {"outline", "outline style: a target domain for adaptation", {{"styles", {"outline"}}}},
      {"striped", "striped fills", {{"styles", {"striped"}}}},
      {"night", "dark backgrounds, glowing shapes", {{"styles", {"night"}}}},
      {"pixel", "pixel-art rendering", {{"styles", {"pixel"}}}},
      {"concept glyphs", "the 5 concept glyphs used for customization", {{"glyphs", shapes::glyph_names()}}},
      {"busy",
       "smaller shapes on two-tone and gradient backgrounds",
       {{"min_scale", 0.3}, {"max_scale", 0.6}, {"jitter", 0.2}, {"plain_backgrounds", false}}},
  };
  return presets;
}

std::vector<Image> render_shapes(const json& data, int size, int count, std::vector<std::string>* captions) {
  const shapes::Spec spec = with_context([&] { return from_json<ShapesData>(data).spec(size); }, "Shapes data");
  std::vector<Image> out;
  for (int i = 0; i < count; ++i) {
    const shapes::Attributes a = shapes::sample_attributes(spec, 0, i);
    out.push_back(shapes::render(a, size));
    if (captions != nullptr) captions->push_back(a.caption());
  }
  return out;
}

void write_shapes_folder(const json& data, int size, int count, const fs::path& folder) {
  const shapes::Spec spec = with_context([&] { return from_json<ShapesData>(data).spec(size); }, "Shapes data");
  for (int i = 0; i < count; ++i) {
    int label = 0;
    const shapes::Attributes a = shapes::sample_attributes(spec, 0, i, &label);
    const fs::path dir = folder / spec.label_name(label);
    fs::create_directories(dir);
    char name[32];
    std::snprintf(name, sizeof(name), "%05d", i);
    save_png(dir / (std::string(name) + ".png"), shapes::render(a, size));
    write_file_atomic(dir / (std::string(name) + ".txt"), a.caption() + "\n");
  }
}

std::string compatibility_report(const fs::path& file, const fs::path& base) {
  DiTModelInfo info;
  DiT model = load_generator_model(base, &info);
  std::string out;
  if (is_adapter_file(file)) {
    const ModelFileInfo a = read_model_file_info(file);
    const std::string hash = model_hash(*model);
    out += file.string() + ": " + a.method + " adapter\n";
    out += a.base_hash == hash ? "  base model: matches " + base.string() + "\n"
                               : "  base model: MISMATCH - trained for " + a.base_hash.substr(0, 12) + "..., " +
                                     base.string() + " is " + hash.substr(0, 12) + "...\n";
    if (a.method != "lora" && a.method != "ortho_lora") return out;
  }
  const LoRAWeights lora = read_lora_file(file, lora_layer_paths(*model));
  const LoRACompatibility c = check_lora(lora, *model);
  out += file.string() + ": " + lora_dialect_name(lora.dialect) + " LoRA, " +
         std::to_string(lora.layers.size() + lora.unresolved.size()) + " layer(s) against " + base.string() + "\n";
  auto section = [&](const char* title, const std::vector<std::string>& names) {
    out += std::string("  ") + title + std::to_string(names.size()) + "\n";
    for (const auto& n : names) out += "    " + n + "\n";
  };
  section("matched:    ", c.matched);
  section("unmatched:  ", c.unmatched);
  section("mismatched: ", c.mismatched);
  return out;
}

void check_job_inputs(const PreparedRun& run) {
  const json& j = run.effective;
  auto string_at = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string images = string_at("images");
  if (!images.empty()) (void)scan_image_folder(images);  // throws naming the folder
  auto adapters = j.find("adapters");
  if (adapters == j.end() || !adapters->is_array() || adapters->empty()) return;
  std::string base = string_at("model");
  if (base.empty()) base = string_at("base");
  if (base.empty()) return;
  DiTModelInfo info;
  DiT model = load_generator_model(base, &info);
  const std::string hash = model_hash(*model);
  for (const auto& a : *adapters) {
    const std::string path = a.get<std::string>();
    if (!is_adapter_file(path)) continue;  // LoRA files of other dialects are checked by the job itself
    const ModelFileInfo f = read_model_file_info(path);
    if (f.base_hash != hash)
      fail(path, ": adapter for base model ", f.base_hash.substr(0, 12), "..., but ", base, " is ", hash.substr(0, 12),
           "... (pick the base it was trained on)");
  }
}

}  // namespace atelier
