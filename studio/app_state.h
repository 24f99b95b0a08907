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
  std::string workspace;  // absolute; models are listed from here (assets/, runs/, models/); empty: not chosen yet
  std::vector<std::string> recent_folders;
  int job_threads = 0;      // LibTorch threads of jobs (0: all cores)
  double font_scale = 0.0;  // 0: the monitor's content scale
  std::string runs_dir = "runs";
  std::vector<std::string> closed_panels;  // unused since the tabbed layout; older settings files carry it
  double sidebar_width = 0;                // 0: the default share of the window

  template <class V>
  void fields(V& v) {
    v("workspace", workspace, "folder whose assets/, runs/ and models/ are listed in Models");
    v("recent_folders", recent_folders, "recently opened image folders (newest first)");
    v("job_threads", job_threads, "LibTorch threads for jobs (0: all cores)", Range{0, 1024});
    v("font_scale", font_scale, "UI scale (0: the monitor's content scale)", Range{0, 4});
    v("runs_dir", runs_dir, "where new runs get their folders");
    v("closed_panels", closed_panels, "unused (panels are tabs); kept so older settings files load");
    v("sidebar_width", sidebar_width, "width of the Models/Data sidebar in pixels (0: the default)", Range{0, 1e5});
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
  // Sets a field to a value (the form's pickers), keeping a list's text in step, and re-validates.
  void set_value(const JobKind& k, const std::string& field, json value);
  // Adds a file to the kind's Input::Adapters list (its PerItem weight list, when one is given, gets the
  // fill value) or removes entry `index` of it (and its weight). False when the kind takes no adapters.
  bool add_adapter(const JobKind& k, const std::string& path);
  void remove_adapter(const JobKind& k, std::size_t index);
  // The kind's first field declared with `input` (null when none).
  static const FieldInfo* input_field(const JobKind& k, Input input);
  json document() const;  // with "kind"
};

// A list as the form's text box shows it: "circle, heart", "1, 2, 4" (JSON when an entry holds a comma or
// is not a plain value); with `lines`, one entry per line (free text such as prompts, Input::Text).
std::string list_text(const json& value, bool lines = false);
// A list field's text back to JSON: comma-separated values ("circle, heart"; "1, 2, 4") or JSON ("[...]",
// objects); an Input::Text list takes one entry per non-empty line. FieldError naming the field for a
// value that is not a number where numbers are expected.
json parse_list_text(const FieldInfo& f, const std::string& text);

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
  // Makes `dir` the workspace: the working folder of jobs (runs_dir and relative paths resolve there),
  // stored absolute, models re-listed and forms re-checked. Error when it is not a folder.
  void open_workspace(const std::filesystem::path& dir);

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
  // "Customize it" (Models): the Train form's model field set to `path`, switching to difffit when the
  // current kind takes no model. "Train on this" (Data): its image folder field set to `folder`, switching
  // to difffit when the current kind takes no folder.
  void use_as_base(const std::string& path);
  void train_on_folder(const std::string& folder);
  // Adds an adapter file to a form that takes adapters (message when it does not).
  void add_adapter(JobForm& form, const std::string& path);

  // Files dropped on the window: a PNG saved by Atelier restores the settings it carries (a sample grid's
  // into Generate, any other job's into Train); an image folder opens in Data and becomes the Train form's
  // dataset. Returns the panel to show ("Gallery", "Train", "Data"), empty when nothing was used.
  std::string drop(const std::vector<std::string>& paths);
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
