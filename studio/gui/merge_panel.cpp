// Merge: concept adapters with weights into one model, with a preview row per concept.
#include "studio/gui/gui.h"

namespace atelier::gui {

void draw_merge_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Merge")) return;
  if (app.job_owner == Owner::Merge) message_bar(app);
  const JobKind& kind = app.registry().get(app.merge.kind);
  ImGui::TextWrapped("%s", kind.help.c_str());
  // Adapters found in the workspace: click to add to the merge.
  if (ImGui::BeginCombo("add adapter", "pick a concept adapter...")) {
    for (const auto& m : app.models) {
      if (!m.adapter_method || !carries_lora(*m.adapter_method)) continue;
      const std::string label = m.path.string() + "  (" + m.method + ")";
      if (ImGui::Selectable(label.c_str())) {
        json list = json::parse(app.merge.json_text["adapters"], nullptr, false);
        if (!list.is_array()) list = json::array();
        list.push_back(m.path.string());
        app.merge.json_text["adapters"] = list.dump();
        app.merge.validate(kind);
      }
    }
    ImGui::EndCombo();
  }
  ImGui::BeginChild("form", ImVec2(0, ImGui::GetTextLineHeightWithSpacing() * 9), true);
  job_form(ui, app, app.merge, kind);
  ImGui::EndChild();
  const bool running = app.job_running();
  if (ui.button("merge.start", "Merge", !running && app.merge.error.empty(),
                running ? "a job is running" : app.merge.error))
    app.start_job(app.merge, Owner::Merge);
  if (!app.merge.error.empty()) {
    error_text(app.merge.error);
  }
  if (app.job_owner == Owner::Merge) {
    draw_job_progress(app, ui);
    for (const auto& [k, v] : app.job.metrics) ImGui::Text("%s: %.4f", k.c_str(), v);
    auto preview = app.job.artifacts.find("preview");
    if (preview != app.job.artifacts.end()) image(ui.textures.file(preview->second), 420 * ui.scale);
  }
  if (!app.merge_output.empty()) ImGui::Text("merged model: %s", app.merge_output.string().c_str());
  ImGui::End();
}

}  // namespace atelier::gui
