// Merge: concept adapters with weights into one model, with a preview row per concept.
#include "studio/gui/gui.h"

namespace atelier::gui {

void draw_merge_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Merge")) return;
  if (app.job_owner == Owner::Merge) message_bar(app);
  const JobKind& kind = app.registry().get(app.merge.kind);
  ImGui::TextWrapped("%s. Add the concepts' adapters below and set each one's weight.", kind.help.c_str());
  const bool running = app.job_running();
  if (ui.button("merge.start", "Merge", !running && app.merge.error.empty(),
                running ? "a job is running" : app.merge.error))
    app.start_job(app.merge, Owner::Merge);
  ImGui::SameLine();
  if (ui.button("merge.reset", "Reset")) app.merge.set_kind(kind);
  if (!app.merge.error.empty()) error_text("Merge disabled: " + app.merge.error);
  if (app.job_owner == Owner::Merge) draw_job_progress(app, ui);
  if (!app.merge_output.empty()) ImGui::Text("merged model: %s", app.merge_output.string().c_str());
  if (ImGui::BeginTable("merge", 2, ImGuiTableFlags_Resizable | ImGuiTableFlags_BordersInnerV,
                        ImGui::GetContentRegionAvail())) {
    ImGui::TableNextColumn();
    ImGui::BeginChild("form", ImVec2(0, 0));
    job_form(ui, app, app.merge, kind);
    ImGui::EndChild();
    ImGui::TableNextColumn();
    ImGui::BeginChild("result", ImVec2(0, 0));
    if (app.job_owner == Owner::Merge) {
      for (const auto& [k, v] : app.job.metrics) ImGui::Text("%s: %.4f", k.c_str(), v);
      auto preview = app.job.artifacts.find("preview");
      static float zoom = 0;
      if (preview != app.job.artifacts.end())
        image_view("preview", ui.textures.file(preview->second), ImGui::GetContentRegionAvail(), zoom);
    } else {
      ImGui::TextDisabled("The merged model's preview (a row per concept) appears here.");
    }
    ImGui::EndChild();
    ImGui::EndTable();
  }
  ui.end_panel();
}

}  // namespace atelier::gui
