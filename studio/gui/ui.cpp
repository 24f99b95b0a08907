// Widgets shared by the panels: textures, scriptable buttons, the file browser and generated job forms.
#include <GL/gl.h>
#include <imgui.h>
#include <imgui_stdlib.h>
#include <stb_image.h>

#include <algorithm>
#include <system_error>
#include <vector>

#include "studio/gui/gui.h"

namespace atelier::gui {
namespace fs = std::filesystem;

// ---- textures ----------------------------------------------------------------------------------

namespace {

unsigned upload(const unsigned char* rgba, int w, int h, unsigned id) {
  if (id == 0) glGenTextures(1, &id);
  glBindTexture(GL_TEXTURE_2D, id);
  // Nearest: the Shapes images are 32x32 and should stay crisp when enlarged.
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_LINEAR);
  glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
  glPixelStorei(GL_UNPACK_ALIGNMENT, 1);
  glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, w, h, 0, GL_RGBA, GL_UNSIGNED_BYTE, rgba);
  return id;
}

}  // namespace

TextureCache::~TextureCache() {
  for (auto& [_, t] : textures_) glDeleteTextures(1, &t.id);
}

const TextureCache::Texture* TextureCache::file(const fs::path& path, std::string* error) {
  std::error_code ec;
  const auto mtime = fs::last_write_time(path, ec);
  if (ec) {
    if (error) *error = path.string() + ": " + ec.message();
    return nullptr;
  }
  auto it = textures_.find(path.string());
  if (it != textures_.end() && it->second.mtime == mtime) return &it->second;
  int w = 0, h = 0, n = 0;
  unsigned char* rgba = stbi_load(path.c_str(), &w, &h, &n, 4);
  if (rgba == nullptr) {
    if (error) *error = path.string() + ": not a readable image (" + stbi_failure_reason() + ")";
    return it != textures_.end() ? &it->second : nullptr;
  }
  Texture& t = textures_[path.string()];
  t.id = upload(rgba, w, h, t.id);
  t.width = w;
  t.height = h;
  t.mtime = mtime;
  stbi_image_free(rgba);
  return &t;
}

const TextureCache::Texture* TextureCache::picture(const std::string& key, const Image& image) {
  auto it = textures_.find(key);
  if (it != textures_.end()) return &it->second;
  std::vector<unsigned char> rgba(static_cast<std::size_t>(image.width) * image.height * 4, 255);
  for (int i = 0; i < image.width * image.height; ++i)
    for (int c = 0; c < 3; ++c)
      rgba[i * 4 + c] = image.pixels[static_cast<std::size_t>(i) * image.channels + (image.channels == 1 ? 0 : c)];
  Texture& t = textures_[key];
  t.id = upload(rgba.data(), image.width, image.height, 0);
  t.width = image.width;
  t.height = image.height;
  return &t;
}

void TextureCache::forget(const std::string& key_prefix) {
  for (auto it = textures_.begin(); it != textures_.end();) {
    if (it->first.rfind(key_prefix, 0) == 0) {
      glDeleteTextures(1, &it->second.id);
      it = textures_.erase(it);
    } else {
      ++it;
    }
  }
}

void image(const TextureCache::Texture* t, float width) {
  if (t == nullptr || t->width == 0) return;
  const float w = std::min(width, ImGui::GetContentRegionAvail().x);
  ImGui::Image(reinterpret_cast<ImTextureID>(static_cast<std::uintptr_t>(t->id)),
               ImVec2(w, w * static_cast<float>(t->height) / static_cast<float>(t->width)));
}

// ---- buttons and panels ------------------------------------------------------------------------

bool Ui::button(const std::string& id, const char* label, bool enabled, const std::string& why_disabled) {
  const bool scripted = pressed.erase(id) > 0;
  if (scripted && !enabled) pressed_disabled = id + " (" + why_disabled + ")";
  ImGui::PushID(id.c_str());
  ImGui::BeginDisabled(!enabled);
  bool clicked = ImGui::Button(label);
  ImGui::EndDisabled();
  ImGui::PopID();
  if (!enabled && !why_disabled.empty() && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
    ImGui::SetTooltip("%s", why_disabled.c_str());
  return enabled && (clicked || scripted);
}

namespace {

// First-launch placement (fractions of the window); later launches restore imgui.ini.
void place(const char* name) {
  struct Rect {
    const char* name;
    float x, y, w, h;
  };
  static const Rect layout[] = {{"Models", 0.00f, 0.03f, 0.30f, 0.45f}, {"Data", 0.00f, 0.48f, 0.30f, 0.52f},
                                {"Train", 0.30f, 0.03f, 0.40f, 0.65f},  {"Gallery", 0.70f, 0.03f, 0.30f, 0.60f},
                                {"Merge", 0.70f, 0.63f, 0.30f, 0.37f},  {"Log", 0.30f, 0.68f, 0.40f, 0.32f}};
  const ImVec2 size = ImGui::GetIO().DisplaySize;
  for (const auto& r : layout)
    if (std::string(name) == r.name) {
      ImGui::SetNextWindowPos(ImVec2(r.x * size.x, r.y * size.y), ImGuiCond_FirstUseEver);
      ImGui::SetNextWindowSize(ImVec2(r.w * size.x, r.h * size.y), ImGuiCond_FirstUseEver);
    }
}

}  // namespace

bool Ui::begin_panel(const char* name) {
  place(name);
  bool& is_open = open[name];
  if (focus == name) {
    is_open = true;
    ImGui::SetNextWindowFocus();
    ImGui::SetNextWindowCollapsed(false);
  }
  if (!is_open) return false;
  if (!ImGui::Begin(name, &is_open)) {
    ImGui::End();
    return false;
  }
  return true;
}

void error_text(const std::string& text) {
  ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.4f, 0.35f, 1.0f));
  ImGui::TextWrapped("%s", text.c_str());
  ImGui::PopStyleColor();
}

void message_bar(AppState& app) {
  if (app.message.empty()) return;
  const ImVec4 color = app.message_is_error ? ImVec4(1.0f, 0.35f, 0.3f, 1.0f) : ImVec4(0.55f, 0.85f, 0.55f, 1.0f);
  ImGui::PushStyleColor(ImGuiCol_Text, color);
  ImGui::TextWrapped("%s", app.message.c_str());
  ImGui::PopStyleColor();
}

// ---- file browser ------------------------------------------------------------------------------

namespace {

struct Browser {
  bool folders = false;
  std::string extension;
  fs::path dir;
  std::string selected;
};

Browser& browser() {
  static Browser b;
  return b;
}

void draw_browser(const char* popup, std::string& target) {
  Browser& b = browser();
  if (!ImGui::BeginPopupModal(popup, nullptr, ImGuiWindowFlags_AlwaysAutoResize)) return;
  ImGui::Text("%s", b.dir.string().c_str());
  if (ImGui::Button("..") && b.dir.has_parent_path()) b.dir = b.dir.parent_path();
  std::vector<fs::directory_entry> entries;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(b.dir, fs::directory_options::skip_permission_denied, ec)) {
    if (e.path().filename().string().rfind('.', 0) == 0) continue;
    if (e.is_directory() || (!b.folders && (b.extension.empty() || e.path().extension() == b.extension)))
      entries.push_back(e);
  }
  std::sort(entries.begin(), entries.end(), [](const auto& x, const auto& y) {
    return x.is_directory() != y.is_directory() ? x.is_directory() : x.path() < y.path();
  });
  ImGui::BeginChild("entries", ImVec2(520, 320), true);
  for (const auto& e : entries) {
    const std::string name = e.path().filename().string() + (e.is_directory() ? "/" : "");
    if (ImGui::Selectable(name.c_str(), b.selected == e.path().string(), ImGuiSelectableFlags_AllowDoubleClick)) {
      b.selected = e.path().string();
      if (e.is_directory() && ImGui::IsMouseDoubleClicked(0)) b.dir = e.path();
    }
  }
  ImGui::EndChild();
  ImGui::InputText("path", &b.selected);
  const bool ok = !b.selected.empty() || b.folders;
  ImGui::BeginDisabled(!ok);
  if (ImGui::Button("Choose")) {
    target = b.selected.empty() ? b.dir.string() : b.selected;
    ImGui::CloseCurrentPopup();
  }
  ImGui::EndDisabled();
  ImGui::SameLine();
  if (ImGui::Button("Cancel")) ImGui::CloseCurrentPopup();
  ImGui::EndPopup();
}

}  // namespace

bool path_field(Ui& /*ui*/, const char* label, std::string& path, bool folders, const char* extension) {
  ImGui::PushID(label);
  const std::string before = path;
  const float browse_w = ImGui::CalcTextSize("...").x + ImGui::GetStyle().FramePadding.x * 4;
  ImGui::SetNextItemWidth(std::max(80.0f, ImGui::CalcItemWidth() - browse_w));
  ImGui::InputText("##path", &path);
  ImGui::SameLine(0, ImGui::GetStyle().ItemInnerSpacing.x);
  if (ImGui::Button("...")) {
    Browser& b = browser();
    b.folders = folders;
    b.extension = extension ? extension : "";
    std::error_code ec;
    fs::path start = path.empty() ? fs::current_path(ec) : fs::path(path);
    if (!fs::is_directory(start, ec)) start = start.parent_path();
    if (start.empty() || !fs::is_directory(start, ec)) start = fs::current_path(ec);
    b.dir = fs::absolute(start, ec);
    b.selected.clear();
    ImGui::OpenPopup(folders ? "Choose a folder" : "Choose a file");
  }
  draw_browser(folders ? "Choose a folder" : "Choose a file", path);
  ImGui::SameLine(0, ImGui::GetStyle().ItemInnerSpacing.x);
  ImGui::TextUnformatted(label);
  ImGui::PopID();
  return path != before;
}

// ---- generated job forms -----------------------------------------------------------------------

namespace {

// A string field naming one file or folder: what the job declares as an input (Input::File, Model,
// ImageFolder, Folder), plus the older fields that name files without declaring it.
bool is_path_field(const FieldInfo& f) {
  if (f.input) return *f.input != Input::Adapters;
  const std::string& n = f.name;
  return n == "model" || n == "base" || n == "images" || n == "vae" || n == "probe" || n == "init" || n == "teacher" ||
         n == "data_dir";
}

bool is_folder_field(const FieldInfo& f) {
  return f.input ? *f.input == Input::ImageFolder || *f.input == Input::Folder
                 : f.name == "images" || f.name == "data_dir";
}

std::string tooltip(const FieldInfo& f) {
  std::string t = f.help + "\ntype: " + f.type + "   default: " + f.default_value.dump();
  if (f.range) t += "\nrange: [" + json(f.range->min).dump() + ", " + json(f.range->max).dump() + "]";
  return t;
}

}  // namespace

bool job_form(Ui& ui, AppState& /*app*/, JobForm& form, const JobKind& kind) {
  bool changed = false;
  ImGui::PushID(kind.name.c_str());
  for (const auto& f : kind.fields) {
    auto err = form.field_errors.find(f.name);
    const bool bad = err != form.field_errors.end();
    if (bad) ImGui::PushStyleColor(ImGuiCol_FrameBg, ImVec4(0.55f, 0.12f, 0.12f, 1.0f));
    json& v = form.values[f.name];
    const char* name = f.name.c_str();
    if (f.type == "bool") {
      bool b = v.is_boolean() && v.get<bool>();
      if (ImGui::Checkbox(name, &b)) v = b, changed = true;
    } else if (f.type == "int") {
      long long i = v.is_number() ? v.get<long long>() : 0;
      if (ImGui::InputScalar(name, ImGuiDataType_S64, &i)) v = i, changed = true;
    } else if (f.type == "float") {
      double d = v.is_number() ? v.get<double>() : 0.0;
      if (ImGui::InputDouble(name, &d, 0.0, 0.0, "%.6g")) v = d, changed = true;
    } else if (f.type == "string" && !f.choices.empty()) {
      std::string s = v.is_string() ? v.get<std::string>() : std::string();
      if (ImGui::BeginCombo(name, s.c_str())) {
        for (const auto& c : f.choices)
          if (ImGui::Selectable(c.c_str(), c == s)) v = c, changed = true;
        ImGui::EndCombo();
      }
    } else if (f.type == "string") {
      std::string s = v.is_string() ? v.get<std::string>() : std::string();
      const bool folder = is_folder_field(f);
      bool edited = is_path_field(f) ? path_field(ui, name, s, folder, folder ? nullptr : ".safetensors")
                                     : ImGui::InputText(name, &s);
      if (edited) v = s, changed = true;
    } else {
      if (ImGui::InputText(name, &form.json_text[f.name])) changed = true;
    }
    if (bad) ImGui::PopStyleColor();
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", tooltip(f).c_str());
    if (bad) {
      error_text("  " + err->second);
    }
  }
  ImGui::PopID();
  if (changed) form.validate(kind);
  return changed;
}

}  // namespace atelier::gui
