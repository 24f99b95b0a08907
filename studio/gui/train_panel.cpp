// Train: any registered job kind, its generated form, Start/Cancel/Resume, live loss, speed and previews.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <vector>

#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

std::string duration(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds);
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  return buf;
}

// The run's metrics file (metrics.json or results.json) as "name: value" lines, re-read when it changes.
const std::vector<std::pair<std::string, std::string>>& run_metrics(const std::filesystem::path& run_dir) {
  static std::filesystem::path shown;
  static std::filesystem::file_time_type mtime{};
  static std::vector<std::pair<std::string, std::string>> rows;
  const auto file = run_dir / "metrics.json";
  std::error_code ec;
  const auto t = std::filesystem::last_write_time(file, ec);
  if (ec) {
    rows.clear();
    shown.clear();
    return rows;
  }
  if (shown == file && t == mtime) return rows;
  shown = file;
  mtime = t;
  rows.clear();
  std::ifstream in(file);
  const json m = json::parse(in, nullptr, false);
  if (!m.is_object()) return rows;
  // Flattened one level ("before.fd_shapes"), numbers with 4 significant digits.
  auto text = [](const json& v) {
    char buf[48];
    if (v.is_number_float()) {
      std::snprintf(buf, sizeof buf, "%.4g", v.get<double>());
      return std::string(buf);
    }
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  for (const auto& [k, v] : m.items()) {
    if (v.is_object()) {
      for (const auto& [k2, v2] : v.items())
        if (!v2.is_structured()) rows.emplace_back(k + "." + k2, text(v2));
    } else if (!v.is_array()) {
      rows.emplace_back(k, text(v));
    }
  }
  return rows;
}

void draw_live(const JobView& job, Ui& ui) {
  static float smoothing = 0.9f;
  const float width = ImGui::GetContentRegionAvail().x;
  if (!job.loss.empty() || !job.val_loss.empty()) {
    ImGui::SetNextItemWidth(std::min(200.0f * ui.scale, width * 0.5f));
    ImGui::SliderFloat("smoothing", &smoothing, 0.0f, 0.99f, "%.2f");
  }
  if (!job.loss.empty()) plot_series("loss", job.loss, ImVec2(width, 150 * ui.scale), smoothing, "loss");
  if (!job.val_loss.empty()) plot_series("val", job.val_loss, ImVec2(width, 100 * ui.scale), 0.0f, "validation loss");
  // A finished run: its before/after grids side by side, and its metrics.
  const auto before = job.artifacts.find("before.png"), after = job.artifacts.find("after.png");
  if (before != job.artifacts.end() || after != job.artifacts.end()) {
    const float w = (width - ImGui::GetStyle().ItemSpacing.x) * 0.5f;
    ImGui::BeginGroup();
    ImGui::TextUnformatted("before");
    if (before != job.artifacts.end()) image(ui.textures.file(before->second), w);
    ImGui::EndGroup();
    ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::TextUnformatted(after != job.artifacts.end() ? "after" : "after (when the run completes)");
    if (after != job.artifacts.end()) image(ui.textures.file(after->second), w);
    ImGui::EndGroup();
  }
  if (!job.run_dir.empty()) {
    const auto& rows = run_metrics(job.run_dir);
    if (!rows.empty() && ImGui::BeginTable("metrics", 2, ImGuiTableFlags_BordersInnerH | ImGuiTableFlags_RowBg)) {
      for (const auto& [k, v] : rows) {
        ImGui::TableNextColumn();
        ImGui::TextUnformatted(k.c_str());
        ImGui::TableNextColumn();
        ImGui::TextUnformatted(v.c_str());
      }
      ImGui::EndTable();
    }
  }
  // A text report: an export's parity report (export_gan: the exported files against the C++ generator,
  // and latency), or a results table (tta_eval).
  auto report = job.artifacts.find("parity");
  if (report == job.artifacts.end()) report = job.artifacts.find("results");
  if (report != job.artifacts.end()) {
    static std::filesystem::path shown;
    static std::string text;
    if (shown != report->second) {
      std::ifstream in(report->second);
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      shown = report->second;
    }
    ImGui::Text("%s: %s", report->first == "parity" ? "export report" : "results", report->second.string().c_str());
    ImGui::BeginChild("parity", ImVec2(0, ImGui::GetTextLineHeightWithSpacing() * 14), true,
                      ImGuiWindowFlags_HorizontalScrollbar);
    ImGui::TextUnformatted(text.c_str());
    ImGui::EndChild();
  }
  auto preview = job.artifacts.find("preview");
  if (preview != job.artifacts.end()) {
    ImGui::Text("preview: %s", preview->second.filename().string().c_str());
    static float zoom = 0;
    const float side = std::max(120.0f, std::min(width, ImGui::GetContentRegionAvail().y));
    image_view("preview", ui.textures.file(preview->second), ImVec2(width, side), zoom);
  }
}

const char* group_name(JobGroup g) {
  switch (g) {
    case JobGroup::Customize: return "Customize";
    case JobGroup::Pipeline: return "Methods' pipelines";
    case JobGroup::Tool: return "Tools";
  }
  return "";
}

std::string kind_label(const JobKind& k) {
  return k.title.empty() ? k.name : k.title + "  (" + k.name + ")";
}

}  // namespace

void draw_job_progress(AppState& app, Ui& ui) {
  const JobView& job = app.job;
  if (job.state == JobState::Idle) return;
  ImGui::Text("%s: %s  (%s)", job.kind.c_str(), job_state_name(job.state), job.run_dir.string().c_str());
  const float fraction = job.total > 0 ? static_cast<float>(job.step) / static_cast<float>(job.total) : 0.0f;
  char overlay[96];
  std::snprintf(overlay, sizeof(overlay), "%s %lld / %lld", job.phase.c_str(), static_cast<long long>(job.step),
                static_cast<long long>(job.total));
  ImGui::ProgressBar(fraction, ImVec2(-1, 0), overlay);
  if (job.state == JobState::Running && job.it_per_s > 0)
    ImGui::Text("%.2f it/s   ETA %s", job.it_per_s, duration(job.eta_s).c_str());
  (void)ui;
}

void draw_train_panel(AppState& app, Ui& ui) {
  if (!ui.begin_panel("Train")) return;
  if (app.job_owner == Owner::Train || app.job_owner == Owner::None) message_bar(app);
  const JobRegistry& reg = app.registry();
  // Every registered kind appears here (new methods show up without GUI changes): customization first.
  const JobKind& kind = reg.get(app.train.kind);
  ImGui::SetNextItemWidth(-FLT_MIN);
  if (ImGui::BeginCombo("##kind", kind_label(kind).c_str(), ImGuiComboFlags_HeightLarge)) {
    std::optional<JobGroup> group;
    for (const JobKind* k : reg.presented()) {
      if (group != k->group) {
        group = k->group;
        ImGui::TextDisabled("%s", group_name(k->group));
      }
      if (ImGui::Selectable(("   " + kind_label(*k)).c_str(), k->name == app.train.kind))
        app.train.set_kind(*k);  // its own defaults
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", k->help.c_str());
    }
    ImGui::EndCombo();
  }
  ImGui::TextWrapped("%s", kind.help.c_str());
  const bool running = app.job_running();
  const bool ours = app.job_owner == Owner::Train;
  std::string why = running ? "a job is running" : app.train.error;
  if (ui.button("train.start", "Start", !running && app.train.error.empty(), why)) {
    if (app.start_job(app.train, Owner::Train)) app.train_run_dir = app.job.run_dir.string();
  }
  ImGui::SameLine();
  if (ui.button("train.cancel", "Cancel", running && ours, "no training job is running")) app.cancel_job();
  ImGui::SameLine();
  const bool resumable = !running && !app.train_run_dir.empty() &&
                         std::filesystem::exists(std::filesystem::path(app.train_run_dir) / "config.json");
  if (ui.button("train.resume", "Resume", resumable && app.train.error.empty(),
                running ? "a job is running" : "no stopped run to resume"))
    app.start_job(app.train, Owner::Train, app.train_run_dir, true);
  ImGui::SameLine();
  if (ui.button("train.reset", "Reset", true, "")) app.train.set_kind(kind);
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("every field back to the %s job's defaults", kind.name.c_str());
  ImGui::SameLine();
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##rundir", "run folder (Resume continues it)", &app.train_run_dir);
  if (!app.train.error.empty()) {
    error_text("Start disabled: " + app.train.error);
  }

  if (ours) draw_job_progress(app, ui);
  // Settings on the left, the live run (loss curves, preview grid) on the right.
  if (ImGui::BeginTable("train", 2, ImGuiTableFlags_Resizable | ImGuiTableFlags_BordersInnerV,
                        ImGui::GetContentRegionAvail())) {
    ImGui::TableNextColumn();
    ImGui::BeginChild("form", ImVec2(0, 0));
    job_form(ui, app, app.train, kind);
    ImGui::EndChild();
    ImGui::TableNextColumn();
    ImGui::BeginChild("live", ImVec2(0, 0));
    draw_live(ours ? app.job : app.last_training, ui);
    ImGui::EndChild();
    ImGui::EndTable();
  }
  ui.end_panel();
}

}  // namespace atelier::gui
