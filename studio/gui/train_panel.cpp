// Train: any registered job kind, its generated form, Start/Cancel/Resume, live loss, speed and previews.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "studio/gui/gui.h"

namespace atelier::gui {

namespace {

// At most `n` points, evenly picked: ImGui's plots draw every value.
std::vector<float> thin(const std::vector<std::pair<std::int64_t, float>>& series, std::size_t n) {
  std::vector<float> out;
  if (series.empty()) return out;
  const std::size_t stride = std::max<std::size_t>(1, series.size() / n);
  for (std::size_t i = 0; i < series.size(); i += stride) out.push_back(series[i].second);
  return out;
}

std::string duration(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds);
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  return buf;
}

void draw_live(const JobView& job, Ui& ui) {
  const auto loss = thin(job.loss, 600);
  if (!loss.empty()) {
    char label[64];
    std::snprintf(label, sizeof(label), "loss %.4f", loss.back());
    ImGui::PlotLines("##loss", loss.data(), static_cast<int>(loss.size()), 0, label, FLT_MAX, FLT_MAX,
                     ImVec2(ImGui::GetContentRegionAvail().x, 90 * ui.scale));
  }
  const auto val = thin(job.val_loss, 600);
  if (!val.empty()) {
    char label[64];
    std::snprintf(label, sizeof(label), "validation loss %.4f", val.back());
    ImGui::PlotLines("##val", val.data(), static_cast<int>(val.size()), 0, label, FLT_MAX, FLT_MAX,
                     ImVec2(ImGui::GetContentRegionAvail().x, 60 * ui.scale));
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
    image(ui.textures.file(preview->second), 360 * ui.scale);
  }
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
  // Every registered kind appears here: new methods show up without GUI changes.
  if (ImGui::BeginCombo("job kind", app.train.kind.c_str())) {
    for (const auto& k : reg.kinds()) {
      if (ImGui::Selectable(k.name.c_str(), k.name == app.train.kind)) app.train.set_kind(k);  // its own defaults
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", k.help.c_str());
    }
    ImGui::EndCombo();
  }
  const JobKind& kind = reg.get(app.train.kind);
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
  if (ImGui::BeginTable("train", 2, ImGuiTableFlags_Resizable | ImGuiTableFlags_BordersInnerV)) {
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
  ImGui::End();
}

}  // namespace atelier::gui
