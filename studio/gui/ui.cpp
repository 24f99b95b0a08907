// Widgets shared by the panels: textures, scriptable buttons, the file browser and generated job forms.
#include <GL/gl.h>
#include <imgui.h>
#include <imgui_stdlib.h>
#include <stb_image.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
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

// ---- buttons, panels and the layout -------------------------------------------------------------

bool Ui::button(const std::string& id, const char* label, bool enabled, const std::string& why_disabled) {
  const bool scripted = pressed.erase(id) > 0;
  if (scripted && !enabled) pressed_disabled = id + " (" + why_disabled + ")";
  ImGui::PushID(id.c_str());
  ImGui::BeginDisabled(!enabled);
  bool clicked = ImGui::Button(label);
  ImGui::EndDisabled();
  ImGui::PopID();
  // A scripted press must hit a button a user could click: drawn inside its window's visible area.
  if (scripted && !ImGui::IsItemVisible()) pressed_hidden = id;
  if (!enabled && !why_disabled.empty() && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
    ImGui::SetTooltip("%s", why_disabled.c_str());
  return enabled && (clicked || scripted);
}

bool Ui::checkbox(const std::string& id, const char* label, bool& on) {
  const bool scripted = pressed.erase(id) > 0;
  ImGui::PushID(id.c_str());
  bool clicked = ImGui::Checkbox(label, &on);
  ImGui::PopID();
  if (scripted && !ImGui::IsItemVisible()) pressed_hidden = id;
  if (scripted && !clicked) on = !on, clicked = true;
  return clicked;
}

bool Ui::slider(const std::string& id, float& value, float min, float max) {
  ImGui::PushID(id.c_str());
  bool changed = ImGui::SliderFloat("##slider", &value, min, max, "%.2f");
  ImGui::PopID();
  if (auto it = slides.find(id); it != slides.end()) {
    if (!ImGui::IsItemVisible()) pressed_hidden = id;
    value = it->second;
    slides.erase(it);
    changed = true;
  }
  return changed;
}

namespace {

// The tab label of a panel ("###" keeps the panel's name as its id).
const char* tab_label(const std::string& name) {
  static const std::map<std::string, std::string> labels = {
      {"Models", "Models###Models"}, {"Data", "Data###Data"},    {"Gallery", "Generate###Gallery"},
      {"Train", "Train###Train"},    {"Merge", "Merge###Merge"}, {"Log", "Log###Log"}};
  auto it = labels.find(name);
  return it != labels.end() ? it->second.c_str() : name.c_str();
}

constexpr ImGuiWindowFlags kAreaFlags = ImGuiWindowFlags_NoTitleBar | ImGuiWindowFlags_NoResize |
                                        ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoCollapse |
                                        ImGuiWindowFlags_NoSavedSettings | ImGuiWindowFlags_NoBringToFrontOnFocus;

std::string current_bar;  // the tab bar panels are being drawn into

}  // namespace

float Ui::default_sidebar_width() const {
  const float w = ImGui::GetMainViewport()->WorkSize.x;
  return std::clamp(w * 0.3f, 260.0f * scale, 560.0f * scale);
}

void Ui::draw_layout(AppState& app) {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  const ImVec2 pos = vp->WorkPos, size = vp->WorkSize;
  const float splitter = 6.0f * scale;
  const float min_side = 220.0f * scale, max_side = std::max(min_side, size.x * 0.55f);
  const float side = std::clamp(sidebar_width > 0 ? sidebar_width : default_sidebar_width(), min_side, max_side);

  auto area = [&](const char* id, ImVec2 at, ImVec2 extent, const char* bar, auto&& panels) {
    ImGui::SetNextWindowPos(at);
    ImGui::SetNextWindowSize(extent);
    if (ImGui::Begin(id, nullptr, kAreaFlags) && ImGui::BeginTabBar(bar)) {
      current_bar = bar;
      panels();
      ImGui::EndTabBar();
    }
    ImGui::End();
  };
  area("##sidebar", pos, ImVec2(side, size.y), "sidebar", [&] {
    draw_models_panel(app, *this);
    draw_data_panel(app, *this);
  });
  // The splitter: drag to resize the sidebar, double-click to reset it.
  ImGui::SetNextWindowPos(ImVec2(pos.x + side, pos.y));
  ImGui::SetNextWindowSize(ImVec2(splitter, size.y));
  ImGui::PushStyleVar(ImGuiStyleVar_WindowPadding, ImVec2(0, 0));
  ImGui::PushStyleVar(ImGuiStyleVar_WindowMinSize, ImVec2(1, 1));
  if (ImGui::Begin("##splitter", nullptr, kAreaFlags | ImGuiWindowFlags_NoScrollbar)) {
    ImGui::InvisibleButton("split", ImVec2(splitter, size.y));
    if (ImGui::IsItemHovered() || ImGui::IsItemActive()) ImGui::SetMouseCursor(ImGuiMouseCursor_ResizeEW);
    if (ImGui::IsItemActive()) sidebar_width = std::clamp(side + ImGui::GetIO().MouseDelta.x, min_side, max_side);
    if (ImGui::IsItemHovered() && ImGui::IsMouseDoubleClicked(0)) sidebar_width = 0;
  }
  ImGui::End();
  ImGui::PopStyleVar(2);
  const float main_x = side + splitter;
  area("##main", ImVec2(pos.x + main_x, pos.y), ImVec2(std::max(1.0f, size.x - main_x), size.y), "main", [&] {
    draw_gallery_panel(app, *this);
    draw_train_panel(app, *this);
    draw_merge_panel(app, *this);
    draw_log_panel(app, *this);
  });
  current_bar.clear();
}

bool Ui::begin_panel(const char* name) {
  const ImGuiTabItemFlags flags = focus == name ? ImGuiTabItemFlags_SetSelected : 0;
  if (!ImGui::BeginTabItem(tab_label(name), nullptr, flags)) return false;
  selected[current_bar] = name;
  ImGui::BeginChild(name, ImVec2(0, 0), false);
  return true;
}

void Ui::end_panel() {
  ImGui::EndChild();
  ImGui::EndTabItem();
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

namespace {

// "..." opening the in-app file browser on `path`'s folder; true when a path was chosen.
bool browse_button(std::string& path, bool folders, const char* extension) {
  const std::string before = path;
  if (ImGui::Button("...")) {
    Browser& b = browser();
    b.folders = folders;
    b.extension = extension ? extension : "";
    std::error_code ec;
    fs::path start = path.empty() ? fs::current_path(ec) : fs::path(resolve_shipped(path));
    if (!fs::is_directory(start, ec)) start = start.parent_path();
    if (start.empty() || !fs::is_directory(start, ec)) start = fs::current_path(ec);
    b.dir = fs::absolute(start, ec);
    b.selected.clear();
    ImGui::OpenPopup(folders ? "Choose a folder" : "Choose a file");
  }
  if (ImGui::IsItemHovered()) ImGui::SetTooltip(folders ? "choose a folder" : "choose a file");
  draw_browser(folders ? "Choose a folder" : "Choose a file", path);
  return path != before;
}

}  // namespace

bool path_field(Ui& /*ui*/, const char* label, std::string& path, bool folders, const char* extension) {
  ImGui::PushID(label);
  const std::string before = path;
  const float browse_w =
      ImGui::CalcTextSize("...").x + ImGui::GetStyle().FramePadding.x * 2 + ImGui::GetStyle().ItemInnerSpacing.x;
  const float label_w = *label ? ImGui::CalcTextSize(label).x + ImGui::GetStyle().ItemInnerSpacing.x : 0.0f;
  ImGui::SetNextItemWidth(std::max(60.0f, ImGui::GetContentRegionAvail().x - browse_w - label_w));
  ImGui::InputText("##path", &path);
  if (ImGui::IsItemHovered() && !path.empty()) ImGui::SetTooltip("%s", path.c_str());
  ImGui::SameLine(0, ImGui::GetStyle().ItemInnerSpacing.x);
  browse_button(path, folders, extension);
  if (*label) {
    ImGui::SameLine(0, ImGui::GetStyle().ItemInnerSpacing.x);
    ImGui::TextUnformatted(label);
  }
  ImGui::PopID();
  return path != before;
}

// ---- generated job forms -----------------------------------------------------------------------

namespace {

// A string field naming one file or folder: what the job declares as an input (Input::File, Model,
// ImageFolder, Folder).
bool is_path_field(const FieldInfo& f) {
  return f.input && *f.input != Input::Adapters && *f.input != Input::Classes && *f.input != Input::Text;
}

bool is_folder_field(const FieldInfo& f) {
  return f.input && (*f.input == Input::ImageFolder || *f.input == Input::Folder);
}

std::string tooltip(const FieldInfo& f) {
  std::string t = f.help + "\ntype: " + f.type + "   default: " + f.default_value.dump();
  if (f.range) t += "\nrange: [" + json(f.range->min).dump() + ", " + json(f.range->max).dump() + "]";
  return t;
}

// The model file kind a path field expects (for sorting the workspace's files), empty when any.
std::string expected_kind(const FieldInfo& f) {
  if (f.input && *f.input == Input::Model) return "dit";
  if (f.name.find("probe") != std::string::npos || f.name.find("classifier") != std::string::npos) return "probe";
  if (f.name == "vae") return "vae";
  return "";
}

// Header-only facts of a file, cached by path and modification time (forms are drawn every frame).
const ModelFileInfo& file_info(const std::string& path) {
  static std::map<std::string, std::pair<fs::file_time_type, ModelFileInfo>> cache;
  std::error_code ec;
  const auto mtime = fs::last_write_time(path, ec);
  auto it = cache.find(path);
  if (it == cache.end() || it->second.first != mtime)
    it = cache.insert_or_assign(path, std::make_pair(mtime, read_model_file_info(path))).first;
  return it->second.second;
}

// How a model file is listed: "dit_shapes.safetensors  dit  (assets/models)".
std::string file_label(const ModelFileInfo& m) {
  std::string label = m.path.filename().string() + "  " + m.kind;
  if (!m.classes.empty() && m.kind == "adapter") {
    std::string names;
    for (std::size_t i = 0; i < m.classes.size() && i < 4; ++i) names += (i ? ", " : "") + m.classes[i];
    label = names + (m.classes.size() > 4 ? ", ..." : "") + "  -  " + label;
  }
  return label + "  (" + m.path.parent_path().string() + ")";
}

// A path: text, a list of the workspace's model files (the expected kind first) and a browse button.
bool model_path_field(AppState& app, const FieldInfo& f, std::string& path) {
  const std::string before = path;
  const ImGuiStyle& style = ImGui::GetStyle();
  const float buttons =
      ImGui::GetFrameHeight() + ImGui::CalcTextSize("...").x + style.FramePadding.x * 2 + style.ItemInnerSpacing.x * 2;
  ImGui::SetNextItemWidth(std::max(60.0f, ImGui::GetContentRegionAvail().x - buttons));
  ImGui::InputText("##path", &path);
  if (ImGui::IsItemHovered() && !path.empty()) ImGui::SetTooltip("%s", path.c_str());
  ImGui::SameLine(0, style.ItemInnerSpacing.x);
  if (ImGui::BeginCombo("##models", nullptr, ImGuiComboFlags_NoPreview | ImGuiComboFlags_HeightLarge)) {
    const std::string kind = expected_kind(f);
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& m : app.models) {
        if (!m.error.empty() || (kind.empty() ? pass == 1 : (m.kind == kind) != (pass == 0))) continue;
        if (ImGui::Selectable(file_label(m).c_str(), m.path.string() == path)) path = m.path.string();
      }
    if (app.models.empty()) ImGui::TextDisabled("no model files in the workspace");
    ImGui::EndCombo();
  }
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("model files of the workspace and the shipped ones");
  ImGui::SameLine(0, style.ItemInnerSpacing.x);
  browse_button(path, false, ".safetensors");
  return path != before;
}

// Checkboxes for the entries of a list of names, flowing over as many lines as needed (ids: prefix + name).
bool name_checkboxes(Ui& ui, const std::string& prefix, const std::vector<std::string>& names, json& value) {
  std::vector<std::string> chosen;
  if (value.is_array())
    for (const auto& v : value)
      if (v.is_string()) chosen.push_back(v.get<std::string>());
  bool changed = false;
  const float right = ImGui::GetCursorScreenPos().x + ImGui::GetContentRegionAvail().x;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const float w =
        ImGui::GetFrameHeight() + ImGui::GetStyle().ItemInnerSpacing.x + ImGui::CalcTextSize(names[i].c_str()).x;
    if (i > 0) {
      ImGui::SameLine();
      if (ImGui::GetCursorScreenPos().x + w > right) ImGui::NewLine();
    }
    bool on = std::find(chosen.begin(), chosen.end(), names[i]) != chosen.end();
    if (ui.checkbox(prefix + names[i], names[i].c_str(), on)) {
      changed = true;
      if (on)
        chosen.push_back(names[i]);
      else
        chosen.erase(std::remove(chosen.begin(), chosen.end(), names[i]), chosen.end());
    }
  }
  if (changed) {
    // In the order the names are listed.
    json out = json::array();
    for (const auto& n : names)
      if (std::find(chosen.begin(), chosen.end(), n) != chosen.end()) out.push_back(n);
    value = out;
  }
  return changed;
}

// The class names of the form's model (Input::Model field), empty when unknown.
std::vector<std::string> model_classes(const JobForm& form, const JobKind& kind) {
  for (const auto& f : kind.fields)
    if (f.input && *f.input == Input::Model && form.values.contains(f.name) && form.values[f.name].is_string()) {
      const std::string path = resolve_shipped(form.values[f.name].get<std::string>());
      std::error_code ec;
      if (!fs::is_regular_file(path, ec)) return {};
      return file_info(path).classes;
    }
  return {};
}

// Adapter rows: concept names, file, a weight slider (the PerItem field), remove; then an "add" list of the
// workspace's adapters.
void adapter_rows(Ui& ui, AppState& app, JobForm& form, const JobKind& kind, const FieldInfo& f) {
  const FieldInfo* weights = nullptr;
  for (const auto& w : kind.fields)
    if (w.per_item == f.name) weights = &w;
  const json list = form.values[f.name].is_array() ? form.values[f.name] : json::array();
  json w = weights && form.values[weights->name].is_array() ? form.values[weights->name] : json::array();
  const double fill = weights ? weights->per_item_fill : 1.0;
  bool weights_changed = false;
  int remove = -1;
  for (std::size_t i = 0; i < list.size(); ++i) {
    ImGui::PushID(static_cast<int>(i));
    const std::string path = list[i].is_string() ? list[i].get<std::string>() : std::string();
    const std::string resolved = resolve_shipped(path);
    std::error_code ec;
    std::string name = fs::path(path).filename().string();
    if (fs::is_regular_file(resolved, ec)) {
      const ModelFileInfo& info = file_info(resolved);
      std::string concepts;
      for (std::size_t c = 0; c < info.classes.size() && c < 4; ++c) concepts += (c ? ", " : "") + info.classes[c];
      if (!concepts.empty()) name = concepts + (info.classes.size() > 4 ? ", ..." : "") + "  (" + name + ")";
    }
    if (ui.button(form.kind + ".remove_adapter." + std::to_string(i), "x")) remove = static_cast<int>(i);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("remove %s", path.c_str());
    ImGui::SameLine();
    if (weights) {
      float weight = static_cast<float>(i < w.size() && w[i].is_number() ? w[i].get<double>() : fill);
      ImGui::SetNextItemWidth(std::max(60.0f, ImGui::GetContentRegionAvail().x * 0.4f));
      if (ui.slider(form.kind + "." + weights->name + "." + std::to_string(i), weight, -1.0f, 2.0f)) {
        while (w.size() < list.size()) w.push_back(fill);
        w[i] = std::round(static_cast<double>(weight) * 100.0) / 100.0;
        weights_changed = true;
      }
      if (ImGui::IsItemHovered())
        ImGui::SetTooltip("%s of this adapter (ctrl+click to type any value)", weights->name.c_str());
      ImGui::SameLine();
    }
    ImGui::TextUnformatted(name.c_str());
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", path.c_str());
    ImGui::PopID();
  }
  if (weights_changed) form.set_value(kind, weights->name, w);
  if (remove >= 0) form.remove_adapter(kind, static_cast<std::size_t>(remove));
  ImGui::SetNextItemWidth(-FLT_MIN);
  if (ImGui::BeginCombo("##add", list.empty() ? "add an adapter..." : "add another adapter...",
                        ImGuiComboFlags_HeightLarge)) {
    bool any = false;
    for (const auto& m : app.models) {
      if (!m.error.empty() || (m.kind != "adapter" && m.kind.rfind("lora", 0) != 0)) continue;
      any = true;
      if (ImGui::Selectable(file_label(m).c_str())) form.add_adapter(kind, m.path.string());
    }
    if (!any) ImGui::TextDisabled("no adapter files in the workspace yet (train a concept first)");
    ImGui::EndCombo();
  }
}

float label_column_width(const JobKind& kind, float available) {
  float widest = 0;
  for (const auto& f : kind.fields)
    if (f.per_item.empty()) widest = std::max(widest, ImGui::CalcTextSize(f.name.c_str()).x);
  return std::min(widest + ImGui::GetStyle().CellPadding.x * 2, available * 0.42f);
}

}  // namespace

void field_label(const char* text, const std::string& help, bool bad) {
  ImGui::AlignTextToFramePadding();
  if (bad) ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.45f, 0.4f, 1.0f));
  ImGui::TextUnformatted(text);
  if (bad) ImGui::PopStyleColor();
  if (ImGui::IsItemHovered() && !help.empty()) ImGui::SetTooltip("%s", help.c_str());
}

bool job_form(Ui& ui, AppState& app, JobForm& form, const JobKind& kind) {
  bool changed = false;
  ImGui::PushID(kind.name.c_str());
  if (!ImGui::BeginTable("fields", 2, ImGuiTableFlags_SizingFixedFit)) {
    ImGui::PopID();
    return false;
  }
  ImGui::TableSetupColumn("name", ImGuiTableColumnFlags_WidthFixed,
                          label_column_width(kind, ImGui::GetContentRegionAvail().x));
  ImGui::TableSetupColumn("value", ImGuiTableColumnFlags_WidthStretch);
  for (const auto& f : kind.fields) {
    if (!f.per_item.empty()) continue;  // drawn on its list's rows
    auto err = form.field_errors.find(f.name);
    const bool bad = err != form.field_errors.end();
    ImGui::TableNextRow();
    ImGui::TableNextColumn();
    field_label(f.name.c_str(), tooltip(f), bad);
    ImGui::TableNextColumn();
    ImGui::PushID(f.name.c_str());
    if (bad) ImGui::PushStyleColor(ImGuiCol_FrameBg, ImVec4(0.55f, 0.12f, 0.12f, 1.0f));
    ImGui::SetNextItemWidth(-FLT_MIN);
    json& v = form.values[f.name];
    const bool list_of_strings = f.type == "list[string]";
    std::vector<std::string> names = f.choices;
    if (list_of_strings && f.input && *f.input == Input::Classes) names = model_classes(form, kind);
    if (f.type == "bool") {
      bool b = v.is_boolean() && v.get<bool>();
      if (ImGui::Checkbox("##v", &b)) v = b, changed = true;
    } else if (f.type == "int") {
      long long i = v.is_number() ? v.get<long long>() : 0;
      if (ImGui::InputScalar("##v", ImGuiDataType_S64, &i)) v = i, changed = true;
    } else if (f.type == "float") {
      double d = v.is_number() ? v.get<double>() : 0.0;
      if (ImGui::InputDouble("##v", &d, 0.0, 0.0, "%.6g")) v = d, changed = true;
    } else if (f.type == "string" && !f.choices.empty()) {
      std::string s = v.is_string() ? v.get<std::string>() : std::string();
      if (ImGui::BeginCombo("##v", s.c_str())) {
        for (const auto& c : f.choices)
          if (ImGui::Selectable(c.c_str(), c == s)) v = c, changed = true;
        ImGui::EndCombo();
      }
    } else if (f.type == "string" && is_path_field(f)) {
      std::string s = v.is_string() ? v.get<std::string>() : std::string();
      const bool edited = is_folder_field(f) ? path_field(ui, "", s, true) : model_path_field(app, f, s);
      if (edited) v = s, changed = true;
    } else if (f.type == "string") {
      std::string s = v.is_string() ? v.get<std::string>() : std::string();
      if (ImGui::InputText("##v", &s)) v = s, changed = true;
    } else if (list_of_strings && f.input && *f.input == Input::Adapters) {
      adapter_rows(ui, app, form, kind, f);  // sets and re-validates the form itself
    } else if (list_of_strings && f.input && *f.input == Input::Text) {
      if (ImGui::InputTextMultiline("##v", &form.json_text[f.name],
                                    ImVec2(-FLT_MIN, ImGui::GetTextLineHeightWithSpacing() * 4.5f)))
        changed = true;
      if (form.json_text[f.name].empty() && !ImGui::IsItemActive()) {
        const ImVec2 min = ImGui::GetItemRectMin();
        ImGui::GetWindowDrawList()->AddText(
            ImVec2(min.x + ImGui::GetStyle().FramePadding.x, min.y + ImGui::GetStyle().FramePadding.y),
            ImGui::GetColorU32(ImGuiCol_TextDisabled), "one prompt per line");
      }
    } else if (list_of_strings && !names.empty()) {
      json value = v;
      if (name_checkboxes(ui, form.kind + "." + f.name + ".", names, value)) form.set_value(kind, f.name, value);
    } else {
      if (ImGui::InputTextWithHint("##v", f.type == "object" ? "JSON" : "values separated by commas",
                                   &form.json_text[f.name]))
        changed = true;
    }
    if (bad) ImGui::PopStyleColor();
    if (bad) error_text(err->second);
    ImGui::PopID();
  }
  ImGui::EndTable();
  ImGui::PopID();
  if (changed) form.validate(kind);
  return changed;
}

// ---- images and plots --------------------------------------------------------------------------

void image_view(const char* id, const TextureCache::Texture* t, ImVec2 size, float& zoom) {
  if (t == nullptr || t->width == 0 || size.x < 8 || size.y < 8) return;
  ImGui::BeginChild(id, size, true, ImGuiWindowFlags_HorizontalScrollbar);
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float fit = std::min(avail.x / static_cast<float>(t->width), avail.y / static_cast<float>(t->height));
  if (ImGui::IsWindowHovered() && ImGui::GetIO().KeyCtrl && ImGui::GetIO().MouseWheel != 0)
    zoom = std::clamp((zoom > 0 ? zoom : fit) * (ImGui::GetIO().MouseWheel > 0 ? 1.25f : 0.8f), 0.25f, 32.0f);
  const float s = zoom > 0 ? zoom : fit;
  ImGui::Image(reinterpret_cast<ImTextureID>(static_cast<std::uintptr_t>(t->id)),
               ImVec2(static_cast<float>(t->width) * s, static_cast<float>(t->height) * s));
  ImGui::EndChild();
}

void plot_series(const char* id, const std::vector<std::pair<std::int64_t, float>>& series, ImVec2 size,
                 float smoothing, const char* title) {
  ImGui::PushID(id);
  const ImVec2 origin = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton("plot", size);
  ImDrawList* draw = ImGui::GetWindowDrawList();
  const ImU32 frame = ImGui::GetColorU32(ImGuiCol_FrameBg), grid = IM_COL32(255, 255, 255, 30),
              text = ImGui::GetColorU32(ImGuiCol_Text), faint = IM_COL32(120, 160, 220, 90),
              line = IM_COL32(120, 190, 255, 255);
  draw->AddRectFilled(origin, ImVec2(origin.x + size.x, origin.y + size.y), frame);
  if (series.empty()) {
    draw->AddText(ImVec2(origin.x + 6, origin.y + 4), text, title);
    ImGui::PopID();
    return;
  }
  // Value range over the smoothed and raw points (at most ~1,000 drawn).
  std::vector<float> smooth(series.size());
  float ema = series.front().second;
  for (std::size_t i = 0; i < series.size(); ++i)
    smooth[i] = ema = smoothing * ema + (1 - smoothing) * series[i].second;
  float lo = *std::min_element(smooth.begin(), smooth.end()), hi = *std::max_element(smooth.begin(), smooth.end());
  for (const auto& p : series) lo = std::min(lo, p.second), hi = std::max(hi, p.second);
  if (hi - lo < 1e-12f) hi = lo + 1.0f;
  const std::int64_t s0 = series.front().first, s1 = std::max(series.back().first, s0 + 1);
  const float left = ImGui::CalcTextSize("0.0000").x + 8, bottom = ImGui::GetTextLineHeight() + 4;
  const ImVec2 a(origin.x + left, origin.y + ImGui::GetTextLineHeight() + 4);
  const ImVec2 b(origin.x + size.x - 8, origin.y + size.y - bottom);
  auto to_screen = [&](std::int64_t step, float value) {
    return ImVec2(a.x + (b.x - a.x) * static_cast<float>(step - s0) / static_cast<float>(s1 - s0),
                  b.y - (b.y - a.y) * (value - lo) / (hi - lo));
  };
  char buf[32];
  for (int k = 0; k <= 4; ++k) {  // value grid and labels
    const float v = lo + (hi - lo) * static_cast<float>(k) / 4.0f;
    const float y = to_screen(s0, v).y;
    draw->AddLine(ImVec2(a.x, y), ImVec2(b.x, y), grid);
    std::snprintf(buf, sizeof buf, "%.4g", v);
    draw->AddText(ImVec2(origin.x + 4, y - ImGui::GetTextLineHeight() * 0.5f), text, buf);
  }
  for (int k = 0; k <= 4; ++k) {  // step labels
    const std::int64_t step = s0 + (s1 - s0) * k / 4;
    const float x = to_screen(step, lo).x;
    draw->AddLine(ImVec2(x, a.y), ImVec2(x, b.y), grid);
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(step));
    const float w = ImGui::CalcTextSize(buf).x;
    draw->AddText(ImVec2(std::clamp(x - w * 0.5f, origin.x, origin.x + size.x - w), b.y + 2), text, buf);
  }
  const std::size_t stride = std::max<std::size_t>(1, series.size() / 1000);
  std::vector<ImVec2> raw, smoothed;
  for (std::size_t i = 0; i < series.size(); i += stride) {
    raw.push_back(to_screen(series[i].first, series[i].second));
    smoothed.push_back(to_screen(series[i].first, smooth[i]));
  }
  if (smoothing > 0) draw->AddPolyline(raw.data(), static_cast<int>(raw.size()), faint, 0, 1.0f);
  draw->AddPolyline(smoothed.data(), static_cast<int>(smoothed.size()), line, 0, 1.5f);
  std::snprintf(buf, sizeof buf, "  last %.4g (step %lld)", series.back().second,
                static_cast<long long>(series.back().first));
  draw->AddText(ImVec2(a.x, origin.y + 2), text, (std::string(title) + buf).c_str());
  if (ImGui::IsItemHovered()) {  // the value under the mouse
    const float mx = ImGui::GetIO().MousePos.x;
    const auto step = s0 + static_cast<std::int64_t>((mx - a.x) / (b.x - a.x) * static_cast<float>(s1 - s0));
    auto it =
        std::lower_bound(series.begin(), series.end(), step, [](const auto& p, std::int64_t s) { return p.first < s; });
    if (it != series.end())
      ImGui::SetTooltip("step %lld: %.5g (smoothed %.5g)", static_cast<long long>(it->first), it->second,
                        smooth[static_cast<std::size_t>(it - series.begin())]);
  }
  ImGui::PopID();
}

}  // namespace atelier::gui
