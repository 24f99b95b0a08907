#include "studio/gui/script.h"

#include <fstream>
#include <map>
#include <sstream>

namespace atelier::gui {
namespace fs = std::filesystem;

namespace {

// Minimum argument count of each command.
const std::map<std::string, std::size_t>& arity() {
  static const std::map<std::string, std::size_t> a = {{"panel", 1},
                                                       {"kind", 2},
                                                       {"set", 3},
                                                       {"press", 1},
                                                       {"press_disabled", 1},
                                                       {"wait", 1},
                                                       {"wait_step", 1},
                                                       {"wait_artifact", 1},
                                                       {"wait_frames", 1},
                                                       {"screenshot", 1},
                                                       {"open_folder", 1},
                                                       {"drop", 1},
                                                       {"slide", 2},
                                                       {"ui_scale", 1},
                                                       {"expect_tab", 1},
                                                       {"refresh_models", 0},
                                                       {"select_model", 1},
                                                       {"check", 2},
                                                       {"wait_tasks", 0},
                                                       {"expect_message", 1},
                                                       {"expect_error", 2},
                                                       {"expect_folder_error", 1},
                                                       {"expect_report", 1},
                                                       {"quit", 0}};
  return a;
}

std::size_t count_artifacts(const JobView& job, const std::string& kind) {
  std::size_t n = 0;
  for (const auto& e : job.events)
    if (e.type == Event::Type::Artifact && e.message == kind) ++n;
  return n;
}

}  // namespace

std::string Script::Command::rest(std::size_t from) const {
  std::string s;
  for (std::size_t i = from; i < args.size(); ++i) s += (i > from ? " " : "") + args[i];
  return s;
}

Script Script::load(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail(path.string(), ": cannot open the script");
  Script s;
  s.path_ = path;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::istringstream words(line);
    Command c{n, {}};
    for (std::string w; words >> w;) c.args.push_back(w);
    if (c.args.empty() || c.args[0][0] == '#') continue;
    auto it = arity().find(c.args[0]);
    if (it == arity().end()) fail(path.string(), ":", n, ": unknown command '", c.args[0], "'");
    if (c.args.size() - 1 < it->second)
      fail(path.string(), ":", n, ": '", c.args[0], "' needs ", it->second, " argument(s)");
    s.commands_.push_back(std::move(c));
  }
  return s;
}

void Script::fail_at(const Command& c, const std::string& why) {
  error_ = path_.string() + ":" + std::to_string(c.line) + ": " + c.rest(0) + ": " + why;
}

JobForm& Script::form(AppState& app, const Command& c) {
  const std::string& f = c.args[1];
  if (f == "train") return app.train;
  if (f == "gallery") return app.gallery;
  if (f == "merge") return app.merge;
  fail("unknown form '", f, "' (train, gallery or merge)");
}

std::optional<std::string> Script::take_screenshot() {
  auto s = screenshot_;
  screenshot_.reset();
  return s;
}

void Script::update(AppState& app, Ui& ui, double now) {
  if (!ui.pressed_disabled.empty()) {
    const std::string hit = ui.pressed_disabled;
    ui.pressed_disabled.clear();
    if (pc_ == 0 || commands_[pc_ - 1].args[0] != "press_disabled") {
      error_ = path_.string() + ": pressed a disabled button: " + hit;
      return;
    }
  }
  if (!ui.pressed_hidden.empty()) {
    error_ = path_.string() + ": button '" + ui.pressed_hidden + "' is outside the visible window (not reachable)";
    ui.pressed_hidden.clear();
    return;
  }
  if (!ui.pressed.empty() || !ui.slides.empty()) {
    error_ = path_.string() + ": '" + (ui.pressed.empty() ? ui.slides.begin()->first : *ui.pressed.begin()) +
             "' is not on screen (open its panel first)";
    return;
  }
  while (!finished()) {
    Command c = commands_[pc_];
    vars_["train_run_dir"] = app.train_run_dir;
    vars_["job_run_dir"] = app.job.run_dir.string();
    for (auto& a : c.args)
      for (const auto& [name, value] : vars_)
        for (std::size_t at; (at = a.find("${" + name + "}")) != std::string::npos;)
          a.replace(at, name.size() + 3, value);
    const std::string& op = c.args[0];
    if (started_ < 0) {
      started_ = now;
      frames_ = 0;
      if (op == "wait_artifact") artifacts_before_ = count_artifacts(app.job, c.args[1]);
    } else {
      ++frames_;
    }
    auto timeout = [&](std::size_t index, double fallback) {
      return c.args.size() > index ? std::stod(c.args[index]) : fallback;
    };
    bool done = true;
    try {
      if (op == "panel") {
        ui.focus = c.args[1];
      } else if (op == "kind") {
        form(app, c).set_kind(app.registry().get(c.args[2]));  // as the combo: the kind's defaults
      } else if (op == "set") {
        if (c.args.size() < 4) fail("'set' needs FORM FIELD VALUE");
        JobForm& f = form(app, c);
        f.set(app.registry().get(f.kind), c.args[2], c.rest(3));
      } else if (op == "slide") {
        ui.slides[c.args[1]] = std::stof(c.args[2]);
      } else if (op == "ui_scale") {
        const float scale = std::stof(c.args[1]);
        if (!(scale >= 0.75f && scale <= 3.0f)) fail("ui_scale ", c.args[1], " is outside [0.75, 3]");
        ui.pending_scale = scale;  // as Settings > UI scale: applied before the next frame
      } else if (op == "press" || op == "press_disabled") {
        ui.pressed.insert(c.args[1]);
      } else if (op == "wait") {
        done = c.args[1] == job_state_name(app.job.state);
        if (!done && app.job.state == JobState::Failed && c.args[1] != "failed")
          fail("the job failed: ", app.job.error);
        if (!done && now - started_ > timeout(2, 600)) fail("timed out waiting for job state ", c.args[1]);
      } else if (op == "wait_step") {
        done = app.job.step >= std::stoll(c.args[1]);
        if (!done && app.job.state == JobState::Failed) fail("the job failed: ", app.job.error);
        if (!done && now - started_ > timeout(2, 600)) fail("timed out waiting for step ", c.args[1]);
      } else if (op == "wait_artifact") {
        done = count_artifacts(app.job, c.args[1]) > artifacts_before_;
        if (!done && app.job.state == JobState::Failed) fail("the job failed: ", app.job.error);
        if (!done && now - started_ > timeout(2, 600)) fail("timed out waiting for artifact ", c.args[1]);
      } else if (op == "wait_frames") {
        done = frames_ >= std::stoi(c.args[1]);
      } else if (op == "screenshot") {
        // Two frames let the layout settle after the previous command.
        done = frames_ >= 2;
        if (done) screenshot_ = c.args[1];
      } else if (op == "drop") {
        const std::string panel = app.drop({c.rest(1)});
        if (!panel.empty()) ui.focus = panel;
      } else if (op == "expect_tab") {
        bool shown = false;
        for (const auto& [bar, panel] : ui.selected) shown = shown || panel == c.args[1];
        // A tab selected by a press shows from the frame after it (ImGui applies selections a frame late).
        done = shown;
        if (!shown && frames_ > 10) fail("the ", c.args[1], " tab is not shown");
      } else if (op == "open_folder") {
        app.open_folder(c.args[1]);
      } else if (op == "refresh_models") {
        app.refresh_models();
      } else if (op == "select_model") {
        app.selected_model = c.args[1];
      } else if (op == "check") {
        app.inspect_file = c.args[1];
        app.inspect_base = c.args[2];
        app.request_report();
      } else if (op == "wait_tasks") {
        done = !app.tasks_pending();
        if (!done && now - started_ > timeout(1, 600)) fail("timed out waiting for background tasks");
      } else if (op == "expect_message") {
        const std::string text = c.rest(1);
        if (app.message.find(text) == std::string::npos)
          fail("the message bar shows '", app.message, "', not '", text, "'");
      } else if (op == "expect_error") {
        JobForm& f = form(app, c);
        if (!f.field_errors.count(c.args[2]))
          fail("field '", c.args[2], "' is not marked invalid (form error: '", f.error, "')");
        if (c.args.size() > 3 && f.field_errors[c.args[2]].find(c.rest(3)) == std::string::npos)
          fail("field '", c.args[2], "' shows '", f.field_errors[c.args[2]], "', not '", c.rest(3), "'");
      } else if (op == "expect_folder_error") {
        const std::string text = c.rest(1);
        if (app.folder_error.find(text) == std::string::npos)
          fail("the Data panel shows '", app.folder_error, "', not '", text, "'");
      } else if (op == "expect_report") {
        const std::string text = c.rest(1);
        if (app.inspect_report.find(text) == std::string::npos)
          fail("the compatibility report does not contain '", text, "':\n", app.inspect_report);
      } else if (op == "quit") {
        pc_ = commands_.size();
        return;
      }
    } catch (const std::exception& e) {
      fail_at(c, e.what());
      return;
    }
    if (!done) return;
    ++pc_;
    started_ = -1;
    // Commands that change what is drawn give the next frame a chance to show (and press) it.
    if (op == "press" || op == "press_disabled" || op == "screenshot" || op == "panel" || op == "wait_frames" ||
        op == "drop" || op == "slide" || op == "ui_scale")
      return;
  }
}

}  // namespace atelier::gui
