// Models: base models and adapters in the workspace with their metadata, and the compatibility report
// of any file against a base model.
#include <algorithm>
#include <cstdio>
#include <string>

#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

std::string size_text(std::uintmax_t bytes) {
  char buf[32];
  if (bytes >= (1u << 20))
    std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  else
    std::snprintf(buf, sizeof(buf), "%.1f kB", static_cast<double>(bytes) / 1024);
  return buf;
}

std::string joined(const std::vector<std::string>& v, std::size_t max) {
  std::string s;
  for (std::size_t i = 0; i < v.size() && i < max; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > max) s += ", ... (" + std::to_string(v.size()) + ")";
  return s;
}

}  // namespace

void draw_models_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Models")) return;
  int selected = -1;
  for (int i = 0; i < static_cast<int>(app.models.size()); ++i)
    if (app.models[i].path.string() == app.selected_model) selected = i;
  if (ui.button("models.refresh", "Refresh")) app.refresh_models();
  ImGui::SameLine();
  ImGui::TextDisabled("%zu files in %s", app.models.size(), app.settings.workspace.c_str());
  const ImGuiTableFlags flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_Borders | ImGuiTableFlags_Resizable |
                                ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp;
  const float rows = std::max(ImGui::GetTextLineHeightWithSpacing() * 7, ImGui::GetContentRegionAvail().y * 0.35f);
  if (ImGui::BeginTable("models", 5, flags | ImGuiTableFlags_Hideable, ImVec2(0, rows))) {
    ImGui::TableSetupScrollFreeze(0, 1);
    ImGui::TableSetupColumn("file", ImGuiTableColumnFlags_WidthStretch, 3.0f);
    ImGui::TableSetupColumn("kind", ImGuiTableColumnFlags_WidthStretch, 1.2f);
    ImGui::TableSetupColumn("base", ImGuiTableColumnFlags_DefaultHide);
    ImGui::TableSetupColumn("classes / concepts", ImGuiTableColumnFlags_WidthStretch, 2.0f);
    ImGui::TableSetupColumn("size", ImGuiTableColumnFlags_DefaultHide);
    ImGui::TableHeadersRow();
    for (int i = 0; i < static_cast<int>(app.models.size()); ++i) {
      const ModelFileInfo& m = app.models[i];
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::PushID(i);
      if (ImGui::Selectable(m.path.filename().string().c_str(), selected == i, ImGuiSelectableFlags_SpanAllColumns))
        app.selected_model = m.path.string();
      ImGui::PopID();
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", m.path.string().c_str());
      ImGui::TableNextColumn();
      if (!m.error.empty())
        ImGui::TextColored(ImVec4(1, 0.4f, 0.35f, 1), "unreadable");
      else
        ImGui::Text("%s%s%s", m.kind.c_str(), m.method.empty() ? "" : " / ", m.method.c_str());
      ImGui::TableNextColumn();
      ImGui::Text("%s", m.base_hash.substr(0, 12).c_str());
      ImGui::TableNextColumn();
      ImGui::Text("%s", joined(m.classes, 4).c_str());
      ImGui::TableNextColumn();
      ImGui::Text("%s", size_text(m.bytes).c_str());
    }
    ImGui::EndTable();
  }
  if (selected >= 0 && selected < static_cast<int>(app.models.size())) {
    const ModelFileInfo& m = app.models[selected];
    ImGui::TextWrapped("%s", m.path.string().c_str());
    if (!m.error.empty()) ImGui::TextWrapped("%s", m.error.c_str());
    // What the file is for first (the buttons stay in view), then the details.
    if (m.kind == "dit") {
      if (ui.button("models.generate", "Generate with it")) {
        app.gallery.set_value(app.registry().get(app.gallery.kind), "model", m.path.string());
        ui.focus = "Gallery";
      }
      ImGui::SameLine();
      if (ui.button("models.train", "Customize it")) {
        app.use_as_base(m.path.string());
        ui.focus = "Train";
      }
    }
    if (m.kind == "stable diffusion") {
      if (ui.button("models.generate", "Generate with it")) {
        const JobKind& sample = app.registry().get(app.gallery.kind);
        app.gallery.set_value(sample, "model", m.path.string());
        app.gallery.set_value(sample, "classes", json::array());  // prompts, not classes
        ui.focus = "Gallery";
      }
    }
    if (m.kind == "adapter" || m.kind.rfind("lora", 0) == 0) {
      if (ui.button("models.sample_adapter", "Generate with it")) {
        app.add_adapter(app.gallery, m.path.string());
        ui.focus = "Gallery";
      }
      ImGui::SameLine();
      if (ui.button("models.merge_adapter", "Add to Merge")) {
        app.add_adapter(app.merge, m.path.string());
        ui.focus = "Merge";
      }
    }
    if (m.kind == "e2gan_generator" || m.kind == "e2gan_edit") {
      // Mobile export of a trained edit: the job runs in Train, which shows the parity report.
      ImGui::TextDisabled("E2GAN %s: %s", m.kind == "e2gan_edit" ? "edit" : "generator", joined(m.classes, 6).c_str());
      if (ui.button("models.export", "Export for mobile (ONNX + ncnn, parity report)", !app.job_running(),
                    "a job is running") &&
          app.export_gan_file(m))
        ui.focus = "Train";
    }
    if (ImGui::SmallButton("check this file")) app.inspect_file = m.path.string();
    ImGui::SameLine();
    if (ImGui::SmallButton("check against this base")) app.inspect_base = m.path.string();
    ImGui::Text("%zu tensors, %lld values", m.tensors, static_cast<long long>(m.parameters));
    if (ImGui::TreeNode("metadata")) {
      for (const auto& [k, v] : m.metadata) {
        const std::string shown = v.size() > 160 ? v.substr(0, 160) + "..." : v;
        ImGui::TextWrapped("%s: %s", k.c_str(), shown.c_str());
      }
      ImGui::TreePop();
    }
  }
  ImGui::Separator();
  ImGui::TextUnformatted("compatibility report");
  path_field(ui, "file (adapter / LoRA)", app.inspect_file, false, ".safetensors");
  path_field(ui, "base model", app.inspect_base, false, nullptr);
  if (ui.button("models.check", "Check compatibility", !app.report_pending(), "checking...")) app.request_report();
  if (!app.inspect_report.empty()) {
    const float min_height = ImGui::GetTextLineHeightWithSpacing() * 8;
    ImGui::BeginChild("report", ImVec2(0, std::max(min_height, ImGui::GetContentRegionAvail().y)), true,
                      ImGuiWindowFlags_HorizontalScrollbar);
    ImGui::TextUnformatted(app.inspect_report.c_str());
    ImGui::EndChild();
  }
  ui.end_panel();
}

}  // namespace atelier::gui
