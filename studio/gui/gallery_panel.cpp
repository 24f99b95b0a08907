// Gallery: sample grids from a model with adapters, shown side by side for comparison, saved with their
// config (the PNG carries it in a text chunk).
#include <imgui.h>
#include <imgui_stdlib.h>

#include <cfloat>
#include <cstdio>
#include <string>

#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

void draw_slot(AppState& app, Ui& ui, const char* title, int index, ImVec2 size, float& zoom) {
  ImGui::BeginGroup();
  if (index >= 0 && index < static_cast<int>(app.gallery_items.size())) {
    const GalleryItem& item = app.gallery_items[index];
    ImGui::PushTextWrapPos(ImGui::GetCursorPosX() + size.x);
    ImGui::TextWrapped("%s  #%d %s", title, index + 1, item.label.c_str());
    ImGui::PopTextWrapPos();
    std::string error;
    const auto* t = ui.textures.file(item.image, &error);
    const float used = ImGui::GetItemRectSize().y + ImGui::GetStyle().ItemSpacing.y;
    if (t)
      image_view(title, t, ImVec2(size.x, std::max(64.0f, size.y - used)), zoom);
    else
      ImGui::TextWrapped("%s", error.c_str());
  } else {
    ImGui::Text("%s", title);
    ImGui::TextDisabled("(empty: Generate, then pick A and B below)");
  }
  ImGui::EndGroup();
}

void draw_results(AppState& app, Ui& ui) {
  const int n = static_cast<int>(app.gallery_items.size());
  if (n == 0) {
    ImGui::TextDisabled("Generated grids appear here. Pick a model and classes on the left, then Generate.");
    return;
  }
  ImGui::Text("compare:");
  for (int i = 0; i < n; ++i) {
    ImGui::SameLine();
    ImGui::PushID(i);
    char label[16];
    std::snprintf(label, sizeof(label), "A%d", i + 1);
    if (ImGui::SmallButton(label)) app.compare_a = i;
    ImGui::SameLine(0, 2);
    std::snprintf(label, sizeof(label), "B%d", i + 1);
    if (ImGui::SmallButton(label)) app.compare_b = i;
    ImGui::PopID();
  }
  ImGui::SameLine();
  if (app.compare_b >= 0 && ImGui::SmallButton("A only")) app.compare_b = -1;
  static std::string save_path;
  if (save_path.empty()) save_path = "gallery.png";
  if (ui.button("gallery.save", "Save A as", app.compare_a >= 0, "nothing generated yet"))
    app.save_gallery_item(app.compare_a, save_path);
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("the PNG carries the config: drop it on the window to restore it");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(-FLT_MIN);
  ImGui::InputText("##save", &save_path);
  ImGui::TextDisabled("ctrl + mouse wheel zooms");
  // A and B side by side at the full height of the panel.
  static float zoom_a = 0, zoom_b = 0;
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  if (app.compare_b < 0) {
    draw_slot(app, ui, "A", app.compare_a, avail, zoom_a);
  } else {
    const float w = (avail.x - ImGui::GetStyle().ItemSpacing.x) * 0.5f;
    draw_slot(app, ui, "A", app.compare_a, ImVec2(w, avail.y), zoom_a);
    ImGui::SameLine();
    draw_slot(app, ui, "B", app.compare_b, ImVec2(w, avail.y), zoom_b);
  }
}

}  // namespace

void draw_gallery_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Gallery")) return;
  if (app.job_owner == Owner::Gallery) message_bar(app);
  const JobKind& kind = app.registry().get(app.gallery.kind);
  const bool running = app.job_running();
  if (ui.button("gallery.generate", "Generate", !running && app.gallery.error.empty(),
                running ? "a job is running" : app.gallery.error))
    app.start_job(app.gallery, Owner::Gallery);
  if (app.job_owner == Owner::Gallery) {
    ImGui::SameLine();
    if (ui.button("gallery.cancel", "Cancel", running, "nothing is generating")) app.cancel_job();
  }
  ImGui::SameLine();
  if (ui.button("gallery.reset", "Reset")) app.gallery.set_kind(kind);
  if (app.job_owner == Owner::Gallery) draw_job_progress(app, ui);
  if (!app.gallery.error.empty()) error_text("Generate disabled: " + app.gallery.error);
  // The settings on the left, the pictures on the right (most of the width).
  if (ImGui::BeginTable("generate", 2, ImGuiTableFlags_Resizable | ImGuiTableFlags_BordersInnerV,
                        ImGui::GetContentRegionAvail())) {
    ImGui::TableSetupColumn("settings", ImGuiTableColumnFlags_WidthStretch, 0.42f);
    ImGui::TableSetupColumn("pictures", ImGuiTableColumnFlags_WidthStretch, 0.58f);
    ImGui::TableNextColumn();
    ImGui::BeginChild("form", ImVec2(0, 0));
    job_form(ui, app, app.gallery, kind);
    ImGui::EndChild();
    ImGui::TableNextColumn();
    ImGui::BeginChild("pictures", ImVec2(0, 0));
    draw_results(app, ui);
    ImGui::EndChild();
    ImGui::EndTable();
  }
  ui.end_panel();
}

}  // namespace atelier::gui
