// The state of the desktop app, owned by the app layer and drawn by the GUI's panels. Torch-free: the UI
// thread edits forms, starts and cancels jobs, and polls their events; all tensor work happens on the
// JobSession's worker or in background tasks.
#pragma once
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/presets.h"
#include "studio/job_registry.h"
#include "studio/job_session.h"
#include "studio/workspace.h"

namespace atelier {

// Persisted between launches (settings.json in the config folder, beside imgui's window layout).
struct Settings {
  std::string workspace = ".";  // models are listed from here (assets/, runs/, models/)
  std::vector<std::string> recent_folders;
  int job_threads = 0;      // LibTorch threads of jobs (0: all cores)
  double font_scale = 0.0;  // 0: the monitor's content scale
  std::string runs_dir = "runs";
  std::vector<std::string> closed_panels;

  template <class V>
  void fields(V& v) {
    v("workspace", workspace, "folder whose assets/, runs/ and models/ are listed in Models");
    v("recent_folders", recent_folders, "recently opened image folders (newest first)");
    v("job_threads", job_threads, "LibTorch threads for jobs (0: all cores)", Range{0, 1024});
    v("font_scale", font_scale, "UI scale (0: the monitor's content scale)", Range{0, 4});
    v("runs_dir", runs_dir, "where new runs get their folders");
    v("closed_panels", closed_panels, "panels closed when the app last quit");
  }
};

// A job config being edited: one text/number/bool value per field of the job kind, validated as a whole
// and per field so the form can highlight what is wrong.
struct JobForm {
  std::string kind;
  json values = json::object();                  // field -> value (the job document without "kind")
  std::map<std::string, std::string> json_text;  // list/object fields edited as JSON text
  std::map<std::string, std::string> field_errors;
  std::string error;  // first problem, or empty when the job is valid
  json effective;     // normalized config when valid

  // Resets to the kind's defaults (keeping values of fields the new kind shares when `keep`).
  void set_kind(const JobKind& k, bool keep = false);
  // Re-validates after an edit. Returns true when the job is valid.
  bool validate(const JobKind& k);
  // Sets a field from JSON text (the script's `set`): numbers, strings, lists... Throws Error naming it.
  void set(const JobKind& k, const std::string& field, const std::string& text);
  json document() const;  // with "kind"
};

struct GalleryItem {
  std::filesystem::path image;
  std::string label;  // model, adapters, sampler, seed
  json config;        // the sample job's effective config
};

enum class Owner { None, Train, Gallery, Merge };

class AppState {
 public:
  explicit AppState(std::filesystem::path config_dir, const JobRegistry& registry = JobRegistry::builtin());
  ~AppState();

  const JobRegistry& registry() const { return registry_; }

  // --- settings -----------------------------------------------------------------------------------
  Settings settings;
  std::filesystem::path config_dir;
  void load_settings();
  void save_settings() const;
  void add_recent_folder(const std::string& folder);

  // --- the job slot (one job at a time, shared by Train, Gallery and Merge) -------------------------
  JobView job;  // the current (or last) job
  Owner job_owner = Owner::None;
  JobView last_training;  // the last Train job once another panel's job replaced it
  // Starts `form` (validated) in `run_dir` (empty: a fresh folder under runs_dir). Errors become
  // `message` and nothing starts. Returns true when the job started.
  bool start_job(const JobForm& form, Owner owner, std::filesystem::path run_dir = {}, bool resume = false);
  void cancel_job();
  bool job_running() const;
  // Once per frame: job events in, finished gallery/merge results out, background tasks collected.
  void poll();

  // A message bar shown on top of every panel (errors in red).
  std::string message;
  bool message_is_error = false;
  void show_message(std::string text, bool error);

  // --- Models ---------------------------------------------------------------------------------------
  std::vector<ModelFileInfo> models;
  void refresh_models();
  std::string inspect_file, inspect_base, inspect_report;
  std::string selected_model;  // path of the file selected in Models
  // Starts `export_gan` (Train panel) for an E2GAN generator or edit file: ONNX + ncnn with the parity
  // report. False with a message when the file is neither or a job is running.
  bool export_gan_file(const ModelFileInfo& file);
  void request_report();  // compatibility report on a background thread
  bool report_pending() const { return report_task_.valid(); }

  // --- Data -----------------------------------------------------------------------------------------
  std::string data_folder;
  std::optional<ImageFolderInfo> folder;
  std::string folder_error;
  void open_folder(const std::string& path);  // errors (no images, missing) land in folder_error
  int shapes_preset = 0;
  int shapes_size = 32;
  ShapesCorruption shapes_corruption;  // Shapes-C: previews and written folders (one corruption or none)
  // Writes a Shapes preset as a folder dataset (with shapes_corruption) on a background thread; the
  // folder opens when done.
  void write_shapes(const json& data, int count, const std::string& folder);
  bool shapes_pending() const { return shapes_task_.valid(); }
  bool tasks_pending() const { return report_pending() || shapes_pending(); }

  // --- Train ----------------------------------------------------------------------------------------
  JobForm train;
  std::string train_run_dir;  // the folder of the last started training run (Resume continues it)

  // --- Gallery --------------------------------------------------------------------------------------
  JobForm gallery;
  std::vector<GalleryItem> gallery_items;
  int compare_a = -1, compare_b = -1;
  void save_gallery_item(int index, const std::string& path);

  // --- Merge ----------------------------------------------------------------------------------------
  JobForm merge;
  std::filesystem::path merge_output;

  // --- Log ------------------------------------------------------------------------------------------
  std::string log_filter;
  int log_min_level = 0;  // Event::Level

 private:
  std::filesystem::path new_run_dir(const std::string& kind) const;
  void collect_tasks();  // background results (reports, written folders) into the state

  const JobRegistry& registry_;
  std::unique_ptr<JobSession> session_;
  std::future<std::string> report_task_;
  std::future<std::string> shapes_task_;  // the folder written
};

}  // namespace atelier
