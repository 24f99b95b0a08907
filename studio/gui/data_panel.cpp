// Data: an image folder (thumbnails, classes, captions) and the Shapes generator presets, clean or
// corrupted (Shapes-C).
#include <imgui.h>
#include <imgui_stdlib.h>

#include <string>

#include "data/corruptions.h"
#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

constexpr int kThumbnails = 48;

void draw_folder(AppState& app, Ui& ui) {
  static std::string typed;
  if (typed.empty()) typed = app.data_folder;
  path_field(ui, "image folder", typed, true);
  ImGui::SameLine();
  if (ui.button("data.open", "Open")) app.open_folder(typed);
  if (!app.settings.recent_folders.empty() && ImGui::BeginCombo("recent", "recent folders")) {
    for (const auto& f : app.settings.recent_folders)
      if (ImGui::Selectable(f.c_str())) {
        typed = f;
        app.open_folder(f);
      }
    ImGui::EndCombo();
  }
  if (!app.folder_error.empty()) {
    error_text(app.folder_error);
  }
  if (!app.folder) return;
  const ImageFolderInfo& f = *app.folder;
  std::vector<int> per_class(std::max<std::size_t>(1, f.classes.size()), 0);
  for (const auto& item : f.items) ++per_class[std::min<std::size_t>(item.label, per_class.size() - 1)];
  ImGui::Text("%zu images, %s", f.items.size(),
              f.classes.empty() ? "flat folder" : (std::to_string(f.classes.size()) + " classes:").c_str());
  std::string classes;
  for (std::size_t c = 0; c < f.classes.size(); ++c)
    classes += (c ? ", " : "") + f.classes[c] + " (" + std::to_string(per_class[c]) + ")";
  if (!classes.empty()) ImGui::TextWrapped("%s", classes.c_str());
  if (ui.button("data.train_on_this", "Train on this")) {
    app.train_on_folder(f.root.string());
    ui.focus = "Train";
  }
  if (ImGui::IsItemHovered())
    ImGui::SetTooltip("the Train form's image folder becomes this folder (DiffFit when the current job takes none)");
  const float cell = 56 * ui.scale;
  const int columns = std::max(1, static_cast<int>(ImGui::GetContentRegionAvail().x / (cell + 8 * ui.scale)));
  for (int i = 0; i < static_cast<int>(f.items.size()) && i < kThumbnails; ++i) {
    if (i % columns != 0) ImGui::SameLine();
    const auto& item = f.items[i];
    const auto* t = ui.textures.file(item.image);
    if (t) {
      image(t, cell);
      if (ImGui::IsItemHovered()) {
        std::string tip = item.image.filename().string();
        if (!f.classes.empty()) tip += "\nclass: " + f.classes[item.label];
        if (!item.caption.empty()) tip += "\n" + item.caption;
        ImGui::SetTooltip("%s", tip.c_str());
      }
    }
  }
}

void draw_shapes(AppState& app, Ui& ui) {
  const auto& presets = shapes_presets();
  if (ImGui::BeginCombo("preset", presets[app.shapes_preset].name.c_str())) {
    for (int i = 0; i < static_cast<int>(presets.size()); ++i)
      if (ImGui::Selectable(presets[i].name.c_str(), i == app.shapes_preset)) app.shapes_preset = i;
    ImGui::EndCombo();
  }
  ShapesCorruption& corruption = app.shapes_corruption;
  const float width = ImGui::GetContentRegionAvail().x;
  ImGui::SetNextItemWidth(width * 0.35f);
  if (ImGui::BeginCombo("corruption", corruption.none() ? "none" : corruption.name.c_str())) {
    if (ImGui::Selectable("none", corruption.none())) corruption.name = "none";
    for (const auto& name : corruption_names())
      if (ImGui::Selectable(name.c_str(), name == corruption.name)) corruption.name = name;
    ImGui::EndCombo();
  }
  ImGui::SameLine();
  ImGui::BeginDisabled(corruption.none());
  ImGui::SetNextItemWidth(width * 0.2f);
  ImGui::SliderInt("severity", &corruption.severity, 1, 5, "%d", ImGuiSliderFlags_AlwaysClamp);
  ImGui::EndDisabled();
  const ShapesPreset& p = presets[app.shapes_preset];
  ImGui::TextWrapped("%s   data: %s", p.help.c_str(), p.data.dump().c_str());
  // Thumbnails per (preset, corruption, severity): the first images of the folder "Write folder" writes.
  const std::string key = "shapes/" + p.name + "/" +
                          (corruption.none() ? "none" : corruption.name + std::to_string(corruption.severity)) + "/";
  static std::map<std::string, std::pair<std::vector<Image>, std::vector<std::string>>> rendered;
  auto it = rendered.find(key);
  if (it == rendered.end()) {
    std::vector<std::string> captions;
    auto images = render_shapes(p.data, app.shapes_size, 16, &captions, corruption);
    it = rendered.emplace(key, std::make_pair(std::move(images), std::move(captions))).first;
  }
  const float cell = 56 * ui.scale;
  const int columns = std::max(1, static_cast<int>(ImGui::GetContentRegionAvail().x / (cell + 8 * ui.scale)));
  for (int i = 0; i < static_cast<int>(it->second.first.size()); ++i) {
    if (i % columns != 0) ImGui::SameLine();
    image(ui.textures.picture(key + std::to_string(i), it->second.first[i]), cell);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", it->second.second[i].c_str());
  }
  static std::string out = "data/shapes";
  static int count = 256;
  ImGui::SetNextItemWidth(120 * ui.scale);
  ImGui::InputInt("images", &count);
  path_field(ui, "folder", out, true);
  if (ui.button("data.write_shapes", "Write folder", count > 0 && !out.empty() && !app.shapes_pending(),
                app.shapes_pending() ? "writing..." : "set a count and a folder"))
    app.write_shapes(p.data, count, out);
}

}  // namespace

void draw_data_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Data")) return;
  if (ImGui::CollapsingHeader("Image folder", ImGuiTreeNodeFlags_DefaultOpen)) draw_folder(app, ui);
  if (ImGui::CollapsingHeader("Shapes generator", ImGuiTreeNodeFlags_DefaultOpen)) draw_shapes(app, ui);
  ui.end_panel();
}

}  // namespace atelier::gui
