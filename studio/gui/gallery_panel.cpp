// Gallery: sample grids from a model with adapters, shown side by side for comparison, saved with their
// config (the PNG carries it in a text chunk).
#include <imgui.h>
#include <imgui_stdlib.h>

#include <cstdio>
#include <string>

#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

void draw_slot(AppState& app, Ui& ui, const char* title, int index, float width) {
  ImGui::BeginGroup();
  ImGui::Text("%s", title);
  if (index >= 0 && index < static_cast<int>(app.gallery_items.size())) {
    const GalleryItem& item = app.gallery_items[index];
    ImGui::PushTextWrapPos(ImGui::GetCursorPosX() + width);
    ImGui::TextWrapped("#%d %s", index + 1, item.label.c_str());
    ImGui::PopTextWrapPos();
    std::string error;
    const auto* t = ui.textures.file(item.image, &error);
    if (t)
      image(t, width);
    else
      ImGui::TextWrapped("%s", error.c_str());
  } else {
    ImGui::TextDisabled("(empty)");
  }
  ImGui::EndGroup();
}

}  // namespace

void draw_gallery_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Gallery")) return;
  if (app.job_owner == Owner::Gallery) message_bar(app);
  const JobKind& kind = app.registry().get(app.gallery.kind);
  if (ImGui::CollapsingHeader("Generate", ImGuiTreeNodeFlags_DefaultOpen)) {
    ImGui::BeginChild("form", ImVec2(0, ImGui::GetTextLineHeightWithSpacing() * 6), true);
    job_form(ui, app, app.gallery, kind);
    ImGui::EndChild();
    const bool running = app.job_running();
    if (ui.button("gallery.generate", "Generate", !running && app.gallery.error.empty(),
                  running ? "a job is running" : app.gallery.error))
      app.start_job(app.gallery, Owner::Gallery);
    if (app.job_owner == Owner::Gallery) {
      ImGui::SameLine();
      if (ui.button("gallery.cancel", "Cancel", running, "nothing is generating")) app.cancel_job();
      draw_job_progress(app, ui);
    }
    if (!app.gallery.error.empty()) {
      error_text(app.gallery.error);
    }
  }
  const int n = static_cast<int>(app.gallery_items.size());
  if (n > 0) {
    ImGui::Separator();
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
    const float full = ImGui::GetContentRegionAvail().x;
    if (app.compare_b < 0) {
      draw_slot(app, ui, "A", app.compare_a, full);
    } else {
      const float w = (full - ImGui::GetStyle().ItemSpacing.x) * 0.5f;
      draw_slot(app, ui, "A", app.compare_a, w);
      ImGui::SameLine();
      draw_slot(app, ui, "B", app.compare_b, w);
    }
    static std::string save_path;
    if (save_path.empty()) save_path = "gallery.png";
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x * 0.6f);
    ImGui::InputText("##save", &save_path);
    ImGui::SameLine();
    if (ui.button("gallery.save", "Save A (with config)", app.compare_a >= 0, "nothing generated yet"))
      app.save_gallery_item(app.compare_a, save_path);
  }
  ImGui::End();
}

}  // namespace atelier::gui
