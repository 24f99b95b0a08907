// Log: the current job's events (the same JSON lines as its run folder's log.jsonl), filterable.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <string>
#include <vector>

#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

std::string event_text(const Event& e) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%8.2fs ", e.time);
  const std::string head = buf;
  switch (e.type) {
    case Event::Type::Log: return head + level_name(e.level) + ": " + e.message;
    case Event::Type::Artifact: return head + "artifact " + e.message + ": " + e.path;
    case Event::Type::Metrics: {
      std::string s = head + "metrics";
      for (const auto& [k, v] : e.scalars) s += " " + k + "=" + std::to_string(v);
      return s;
    }
    case Event::Type::Progress: {
      std::string s = head + e.phase + " " + std::to_string(e.step) + "/" + std::to_string(e.total);
      for (const auto& [k, v] : e.scalars) s += " " + k + "=" + std::to_string(v);
      return s;
    }
  }
  return head;
}

}  // namespace

void draw_log_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Log")) return;
  static bool show_progress = false;
  const char* levels[] = {"debug", "info", "warn", "error"};
  ImGui::SetNextItemWidth(100 * ui.scale);
  ImGui::Combo("level", &app.log_min_level, levels, 4);
  ImGui::SameLine();
  ImGui::Checkbox("progress", &show_progress);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##filter", "filter text", &app.log_filter);
  if (!app.job.error.empty()) {
    error_text("error: " + app.job.error);
  }
  ImGui::BeginChild("events", ImVec2(0, 0), true, ImGuiWindowFlags_HorizontalScrollbar);
  // Long runs log tens of thousands of events: filter to indices, then draw only the visible lines.
  std::vector<int> shown;
  for (int i = 0; i < static_cast<int>(app.job.events.size()); ++i) {
    const Event& e = app.job.events[i];
    if (e.type == Event::Type::Progress && !show_progress) continue;
    if (e.type == Event::Type::Log && static_cast<int>(e.level) < app.log_min_level) continue;
    if (!app.log_filter.empty() && event_text(e).find(app.log_filter) == std::string::npos) continue;
    shown.push_back(i);
  }
  ImGuiListClipper clipper;
  clipper.Begin(static_cast<int>(shown.size()));
  while (clipper.Step()) {
    for (int row = clipper.DisplayStart; row < clipper.DisplayEnd; ++row) {
      const Event& e = app.job.events[shown[row]];
      const std::string text = event_text(e);
      const bool bad = e.type == Event::Type::Log && e.level >= Event::Level::Warn;
      if (bad)
        ImGui::TextColored(e.level == Event::Level::Error ? ImVec4(1, 0.4f, 0.35f, 1) : ImVec4(1, 0.8f, 0.3f, 1), "%s",
                           text.c_str());
      else
        ImGui::TextUnformatted(text.c_str());
    }
  }
  if (ImGui::GetScrollY() >= ImGui::GetScrollMaxY()) ImGui::SetScrollHereY(1.0f);
  ImGui::EndChild();
  ui.end_panel();
}

}  // namespace atelier::gui
