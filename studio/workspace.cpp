#include "studio/workspace.h"

#include <algorithm>
#include <cstdlib>

#include "core/safetensors.h"
#include "data/folder_dataset.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> json_list(const std::map<std::string, std::string>& meta, const std::string& key) {
  auto it = meta.find(key);
  if (it == meta.end()) return {};
  try {
    return string_list(parse_json(it->second, key), key);
  } catch (const Error&) {
    return {};  // the panel shows the file without them
  }
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
      info.adapter_method = enum_from_name<AdapterMethod>(info.method);
      info.base_hash = meta_or(h.metadata, "adapter.base", "");
      info.classes = json_list(h.metadata, "adapter.classes");
    } else if (kind == "dit") {
      info.kind = "dit";
      info.classes = json_list(h.metadata, "classes");
    } else if (kind == "e2gan_generator") {
      info.kind = kind;
      info.classes = json_list(h.metadata, "edits");
    } else if (kind == "e2gan_edit" || kind == "edit_pairs") {
      info.kind = kind;
      info.classes = {meta_or(h.metadata, "edit", "?")};
      info.base_hash = meta_or(h.metadata, "base_hash", "");
    } else if (!kind.empty()) {
      info.kind = kind;
      info.classes = json_list(h.metadata, "classes");
    } else if (reader.find("model.diffusion_model.input_blocks.0.0.weight") != nullptr) {
      info.kind = "stable diffusion";  // a single-file checkpoint (LDM names)
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

const fs::path& installation_dir() {
  static const fs::path dir = [] {
    auto holds_assets = [](const fs::path& p) {
      std::error_code ec;
      return fs::is_directory(p / "assets" / "models", ec);
    };
    if (const char* home = std::getenv("ATELIER_HOME"); home != nullptr && *home != '\0') return fs::path(home);
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return fs::path();
    for (fs::path p = exe.parent_path(); !p.empty(); p = p.parent_path()) {
      if (holds_assets(p)) return p;
      if (holds_assets(p / "share" / "atelier")) return p / "share" / "atelier";
      if (p == p.root_path()) break;
    }
    return fs::path();
  }();
  return dir;
}

std::string resolve_shipped(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (path.empty() || p.is_absolute() || fs::exists(p, ec) || installation_dir().empty()) return path;
  const fs::path shipped = installation_dir() / p;
  return fs::exists(shipped, ec) ? shipped.string() : path;
}

void resolve_input_paths(const std::vector<FieldInfo>& fields, json& effective) {
  for (const auto& f : fields) {
    if (!f.input || *f.input == Input::Classes || *f.input == Input::Text || !effective.contains(f.name)) continue;
    json& value = effective[f.name];
    if (value.is_string()) value = resolve_shipped(value.get<std::string>());
    if (value.is_array())
      for (auto& v : value)
        if (v.is_string()) v = resolve_shipped(v.get<std::string>());
  }
}

}  // namespace atelier
