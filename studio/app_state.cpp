#include "studio/app_state.h"

#include <ctime>
#include <fstream>

#include "core/atomic_file.h"
#include "core/image.h"
#include "data/presets.h"
#include "diffusion/generate.h"
#include "studio/model_ops.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {

bool edited_as_text(const FieldInfo& f) {
  return f.type == "object" || f.type.rfind("list", 0) == 0;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

std::string list_text(const json& value, bool lines) {
  if (!value.is_array()) return value.dump();
  std::string out;
  if (lines) {
    for (const auto& v : value) out += (out.empty() ? "" : "\n") + (v.is_string() ? v.get<std::string>() : v.dump());
    return out;
  }
  for (const auto& v : value) {
    if (v.is_string() && v.get<std::string>().find(',') != std::string::npos) return value.dump();
    if (!v.is_string() && !v.is_number() && !v.is_boolean()) return value.dump();
    out += (out.empty() ? "" : ", ") + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

json parse_list_text(const FieldInfo& f, const std::string& text) {
  const std::string t = trim(text);
  if (f.type == "object" || (!t.empty() && (t[0] == '[' || t[0] == '{'))) {
    json parsed = json::parse(t.empty() ? "{}" : t, nullptr, false);
    if (parsed.is_discarded()) fail_field(f.name, "not valid JSON: ", text);
    return parsed;
  }
  json list = json::array();
  if (t.empty()) return list;
  if (f.input && *f.input == Input::Text) {
    std::size_t start = 0;
    while (start <= t.size()) {
      const std::size_t end = std::min(t.find('\n', start), t.size());
      if (std::string line = trim(t.substr(start, end - start)); !line.empty()) list.push_back(line);
      start = end + 1;
    }
    return list;
  }
  const bool strings = f.type == "list[string]";
  std::size_t start = 0;
  while (start <= t.size()) {
    const std::size_t comma = std::min(t.find(',', start), t.size());
    std::string item = trim(t.substr(start, comma - start));
    start = comma + 1;
    if (strings) {
      if (item.size() >= 2 && item.front() == '"' && item.back() == '"') item = item.substr(1, item.size() - 2);
      list.push_back(item);
    } else {
      json number = json::parse(item, nullptr, false);
      if (number.is_discarded() || !number.is_number())
        fail_field(f.name, "'", item, "' is not a number (give numbers separated by commas: 1, 2, 4)");
      list.push_back(number);
    }
  }
  return list;
}

// ---- JobForm -----------------------------------------------------------------------------------

void JobForm::set_kind(const JobKind& k, bool keep) {
  json old = values;
  kind = k.name;
  values = json::object();
  json_text.clear();
  for (const auto& f : k.fields) {
    values[f.name] = keep && old.contains(f.name) ? old[f.name] : f.default_value;
    if (edited_as_text(f)) json_text[f.name] = list_text(values[f.name], f.input == Input::Text);
  }
  validate(k);
}

void JobForm::set_value(const JobKind& k, const std::string& field, json value) {
  auto f = std::find_if(k.fields.begin(), k.fields.end(), [&](const FieldInfo& i) { return i.name == field; });
  if (f == k.fields.end()) fail("job kind '", k.name, "' has no field '", field, "'");
  if (edited_as_text(*f)) json_text[field] = list_text(value, f->input == Input::Text);
  values[field] = std::move(value);
  validate(k);
}

bool JobForm::validate(const JobKind& k) {
  field_errors.clear();
  error.clear();
  effective = json();
  for (const auto& f : k.fields) {
    if (!edited_as_text(f)) continue;
    try {
      values[f.name] = parse_list_text(f, json_text[f.name]);
    } catch (const FieldError& e) {
      field_errors[f.name] = e.what();
    }
  }
  if (!field_errors.empty()) {
    error = field_errors.begin()->second;
    return false;
  }
  try {
    json normalized = k.normalize(values);
    // The runner's own pre-check (inputs exist, classes known, adapters fit the base), with shipped models
    // found as the runner finds them: a problem shows before Start, not after a job has worked for a minute.
    json resolved = normalized;
    resolve_input_paths(k.fields, resolved);
    check_job_inputs(k, resolved);
    effective = std::move(normalized);
    return true;
  } catch (const FieldError& e) {
    error = e.what();
    field_errors[e.field()] = error;
    return false;
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
}

void JobForm::set(const JobKind& k, const std::string& field, const std::string& text) {
  auto f = std::find_if(k.fields.begin(), k.fields.end(), [&](const FieldInfo& i) { return i.name == field; });
  if (f == k.fields.end()) fail("job kind '", k.name, "' has no field '", field, "'");
  if (edited_as_text(*f)) {
    json_text[field] = text;
  } else {
    json v = json::parse(text, nullptr, false);
    // Bare words are strings (set model runs/x/model.safetensors).
    values[field] = v.is_discarded() || (f->type == "string" && !v.is_string()) ? json(text) : v;
  }
  validate(k);
}

const FieldInfo* JobForm::input_field(const JobKind& k, Input input) {
  for (const auto& f : k.fields)
    if (f.input == input) return &f;
  return nullptr;
}

namespace {

// The PerItem list of `field` (weights of adapters), null when none.
const FieldInfo* per_item_field(const JobKind& k, const std::string& field) {
  for (const auto& f : k.fields)
    if (f.per_item == field) return &f;
  return nullptr;
}

}  // namespace

bool JobForm::add_adapter(const JobKind& k, const std::string& path) {
  const FieldInfo* f = input_field(k, Input::Adapters);
  if (f == nullptr) return false;
  json list = values[f->name].is_array() ? values[f->name] : json::array();
  if (const FieldInfo* w = per_item_field(k, f->name)) {
    // An empty weight list means "the fill value each": made explicit so every adapter has its slider value.
    json weights = values[w->name].is_array() ? values[w->name] : json::array();
    while (weights.size() < list.size()) weights.push_back(w->per_item_fill);
    weights.push_back(w->per_item_fill);
    set_value(k, w->name, weights);
  }
  list.push_back(path);
  set_value(k, f->name, list);
  return true;
}

void JobForm::remove_adapter(const JobKind& k, std::size_t index) {
  const FieldInfo* f = input_field(k, Input::Adapters);
  if (f == nullptr || !values[f->name].is_array() || index >= values[f->name].size()) return;
  json list = values[f->name];
  list.erase(list.begin() + static_cast<std::ptrdiff_t>(index));
  if (const FieldInfo* w = per_item_field(k, f->name); w && values[w->name].is_array()) {
    json weights = values[w->name];
    if (index < weights.size()) weights.erase(weights.begin() + static_cast<std::ptrdiff_t>(index));
    set_value(k, w->name, weights);
  }
  set_value(k, f->name, list);
}

json JobForm::document() const {
  json doc = values;
  doc["kind"] = kind;
  return doc;
}

// ---- AppState ----------------------------------------------------------------------------------

AppState::AppState(fs::path dir, const JobRegistry& registry) : config_dir(std::move(dir)), registry_(registry) {
  load_settings();
  train.set_kind(registry_.get("difffit"));  // the first customization job an artist runs
  gallery.set_kind(registry_.get("sample"));
  merge.set_kind(registry_.get("merge"));
}

AppState::~AppState() {
  if (session_) session_->cancel();
}

void AppState::load_settings() {
  const fs::path p = config_dir / "settings.json";
  if (!fs::exists(p)) return;
  try {
    settings = from_json<Settings>(load_json_file(p));
  } catch (const std::exception& e) {
    show_message(p.string() + ": " + e.what() + " (defaults used)", true);
  }
}

void AppState::save_settings() const {
  fs::create_directories(config_dir);
  write_file_atomic(config_dir / "settings.json", to_json(settings).dump(2) + "\n");
}

void AppState::add_recent_folder(const std::string& folder) {
  auto& r = settings.recent_folders;
  r.erase(std::remove(r.begin(), r.end(), folder), r.end());
  r.insert(r.begin(), folder);
  if (r.size() > 10) r.resize(10);
}

void AppState::show_message(std::string text, bool error) {
  message = std::move(text);
  message_is_error = error;
}

fs::path AppState::new_run_dir(const std::string& kind) const {
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  fs::path base = fs::path(settings.runs_dir) / (kind + "-" + stamp);
  fs::path dir = base;
  for (int i = 2; fs::exists(dir); ++i) dir = base.string() + "-" + std::to_string(i);
  return dir;
}

bool AppState::job_running() const {
  return session_ && session_->busy();
}

bool AppState::start_job(const JobForm& form, Owner owner, fs::path run_dir, bool resume) {
  if (job_running()) {
    show_message("a job is already running: cancel it or wait until it finishes", true);
    return false;
  }
  if (!form.error.empty()) {
    show_message(form.error, true);
    return false;
  }
  if (run_dir.empty()) run_dir = new_run_dir(form.kind);
  try {
    if (!session_) session_ = std::make_unique<JobSession>(registry_, settings.job_threads);
    RunRequest request{form.document(), "studio", {}, run_dir, resume};
    // A resumed run continues its curves: replay what its log held before this start.
    std::vector<Event> previous;
    if (resume && fs::exists(run_dir / "log.jsonl")) previous = read_jsonl_log(run_dir / "log.jsonl");
    const PreparedRun p = session_->start(request);
    if (job_owner == Owner::Train && owner != Owner::Train) last_training = std::move(job);
    job = JobView{};
    for (const Event& e : previous) job.apply(e);
    job.kind = p.kind->name;
    job.run_dir = p.run_dir;
    job.state = JobState::Running;
    job_owner = owner;
    show_message(std::string(resume ? "resumed " : "started ") + job.kind + " in " + p.run_dir.string(), false);
    return true;
  } catch (const std::exception& e) {
    show_message(e.what(), true);
    return false;
  }
}

bool AppState::export_gan_file(const ModelFileInfo& file) {
  std::string generator, edit;
  if (file.kind == "e2gan_generator") {
    generator = file.path.string();
  } else if (file.kind == "e2gan_edit") {
    edit = file.path.string();
    // The base generator the edit was trained on: its absolute path as e2gan_concept recorded it, else
    // the path its job named.
    if (auto g = file.metadata.find("generator"); g != file.metadata.end()) generator = g->second;
    auto it = file.metadata.find("atelier.config");
    const json config = it == file.metadata.end() ? json() : json::parse(it->second, nullptr, false);
    if ((generator.empty() || !fs::exists(generator)) && config.is_object() && config.value("generator", "") != "")
      generator = config["generator"].get<std::string>();
    if (generator.empty() || !fs::exists(generator)) {
      show_message(file.path.string() + ": its base generator " + (generator.empty() ? "is not recorded" : generator) +
                       " is not here; export it from the Train panel (job kind export_gan) with the generator named",
                   true);
      return false;
    }
  } else {
    show_message(file.path.string() + " is not an E2GAN generator or edit", true);
    return false;
  }
  const JobKind& kind = registry().get("export_gan");
  train.set_kind(kind);
  train.set(kind, "generator", generator);
  train.set(kind, "edit", edit);
  if (!start_job(train, Owner::Train)) return false;
  train_run_dir = job.run_dir.string();
  return true;
}

void AppState::cancel_job() {
  if (session_) session_->cancel();
}

void AppState::poll() {
  if (session_) {
    const JobState before = job.state;
    session_->poll(job);
    if (before == JobState::Running && job.state != JobState::Running) {
      if (job.state == JobState::Failed) {
        show_message(job.kind + " failed: " + job.error, true);
      } else if (job.state == JobState::Cancelled) {
        show_message(job.kind + " cancelled; Resume continues it from its last checkpoint", false);
      } else {
        show_message(job.kind + " completed: " + job.run_dir.string(), false);
        if (job_owner == Owner::Gallery && job.artifacts.count("samples")) {
          const json& c = gallery.effective;
          gallery_items.push_back({job.artifacts["samples"], sample_label(from_json<SampleConfig>(c, {"kind"})), c});
          compare_b = compare_a;
          compare_a = static_cast<int>(gallery_items.size()) - 1;
        }
        if (job_owner == Owner::Merge && job.artifacts.count("model")) merge_output = job.artifacts["model"];
        if (job_owner == Owner::Train || job_owner == Owner::Merge) refresh_models();
      }
    }
  }
  collect_tasks();
}

void AppState::collect_tasks() {
  if (report_task_.valid() && report_task_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    try {
      inspect_report = report_task_.get();
    } catch (const std::exception& e) {
      inspect_report = std::string("error: ") + e.what();
    }
  }
  if (shapes_task_.valid() && shapes_task_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    try {
      const std::string folder = shapes_task_.get();
      show_message("wrote Shapes images to " + folder, false);
      open_folder(folder);
    } catch (const std::exception& e) {
      show_message(e.what(), true);
    }
  }
}

void AppState::use_as_base(const std::string& path) {
  const JobKind* k = &registry_.get(train.kind);
  if (JobForm::input_field(*k, Input::Model) == nullptr) {
    k = &registry_.get("difffit");
    train.set_kind(*k);
  }
  train.set_value(*k, JobForm::input_field(*k, Input::Model)->name, path);
}

void AppState::train_on_folder(const std::string& folder) {
  const JobKind* k = &registry_.get(train.kind);
  if (JobForm::input_field(*k, Input::ImageFolder) == nullptr) {
    k = &registry_.get("difffit");
    train.set_kind(*k);
  }
  if (const FieldInfo* f = JobForm::input_field(*k, Input::ImageFolder)) {
    train.set_value(*k, f->name, folder);
    show_message(k->name + " will train on " + folder, false);
  } else {
    show_message(k->name + " takes no image folder", true);
  }
}

void AppState::add_adapter(JobForm& form, const std::string& path) {
  const JobKind& k = registry_.get(form.kind);
  if (!form.add_adapter(k, path)) show_message(k.name + " takes no adapters", true);
}

std::string AppState::drop(const std::vector<std::string>& paths) {
  std::string panel;
  for (const auto& path : paths) {
    std::error_code ec;
    try {
      if (fs::is_directory(path, ec)) {
        open_folder(path);
        if (!folder_error.empty()) {
          show_message(folder_error, true);
          continue;
        }
        train_on_folder(path);
        panel = "Train";
        continue;
      }
      if (fs::path(path).extension() != ".png") fail(path, ": drop a PNG saved by Atelier or a folder of images");
      const auto text = read_png_text(path);
      auto it = text.find("atelier.config");
      if (it == text.end()) fail(path, ": this PNG carries no Atelier settings (no atelier.config text chunk)");
      json config = json::parse(it->second, nullptr, false);
      if (!config.is_object()) fail(path, ": its atelier.config chunk is not a JSON object");
      const std::string kind = config.value("kind", "sample");
      const JobKind* k = registry_.find(kind);
      if (k == nullptr) fail(path, ": settings of an unknown job kind '", kind, "'");
      JobForm& form = kind == "sample" ? gallery : kind == "merge" ? merge : train;
      form.set_kind(*k);
      for (const auto& f : k->fields)
        if (config.contains(f.name)) form.set_value(*k, f.name, config[f.name]);
      show_message("settings restored from " + path, false);
      panel = kind == "sample" ? "Gallery" : kind == "merge" ? "Merge" : "Train";
    } catch (const std::exception& e) {
      show_message(e.what(), true);
    }
  }
  return panel;
}

void AppState::refresh_models() {
  const fs::path ws(settings.workspace.empty() ? fs::current_path() : fs::path(settings.workspace));
  std::vector<fs::path> roots = {ws / "assets", ws / "runs", ws / "models"};
  if (fs::path(settings.runs_dir).is_absolute()) roots.emplace_back(settings.runs_dir);
  // The shipped models, wherever Atelier is installed (unless the workspace is the installation itself).
  std::error_code ec;
  const fs::path shipped = installation_dir() / "assets" / "models";
  if (!installation_dir().empty() && !fs::equivalent(shipped, ws / "assets" / "models", ec)) roots.push_back(shipped);
  models = scan_model_files(roots);
}

void AppState::open_workspace(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail("workspace ", dir.string(), fs::exists(dir) ? " is not a folder" : " does not exist");
  fs::current_path(dir);
  settings.workspace = fs::current_path().string();
  refresh_models();
  for (JobForm* form : {&train, &gallery, &merge}) form->validate(registry_.get(form->kind));
}

void AppState::request_report() {
  if (report_task_.valid()) return;
  if (inspect_file.empty() || inspect_base.empty()) {
    inspect_report = "pick a file and a base model";
    return;
  }
  inspect_report = "checking...";
  report_task_ = std::async(std::launch::async,
                            [file = inspect_file, base = inspect_base] { return compatibility_report(file, base); });
}

void AppState::write_shapes(const json& data, int count, const std::string& folder) {
  if (shapes_task_.valid()) return;
  const ShapesCorruption c = shapes_corruption;
  const std::string what = c.none() ? "" : " (" + c.name + " severity " + std::to_string(c.severity) + ")";
  show_message("writing " + std::to_string(count) + " Shapes images" + what + " to " + folder + "...", false);
  shapes_task_ = std::async(std::launch::async, [data, count, folder, size = shapes_size, c] {
    write_shapes_folder(data, size, count, folder, c);
    return folder;
  });
}

void AppState::open_folder(const std::string& path) {
  data_folder = path;
  folder.reset();
  folder_error.clear();
  try {
    folder = scan_image_folder(path);
    add_recent_folder(path);
  } catch (const std::exception& e) {
    folder_error = e.what();
    show_message(folder_error, true);
  }
}

void AppState::save_gallery_item(int index, const std::string& path) {
  try {
    if (index < 0 || index >= static_cast<int>(gallery_items.size())) fail("no gallery image selected");
    if (path.empty()) fail("type a file name to save to");
    fs::path to(path);
    if (to.has_parent_path()) fs::create_directories(to.parent_path());
    std::ifstream in(gallery_items[index].image, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty()) fail(gallery_items[index].image.string(), ": cannot be read");
    write_file_atomic(to, bytes);  // the PNG keeps its atelier.config text chunk
    show_message("saved " + to.string(), false);
  } catch (const std::exception& e) {
    show_message(e.what(), true);
  }
}

}  // namespace atelier
