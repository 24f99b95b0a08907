// Scripted UI sessions for tests and screenshots: `atelier-studio --script FILE` replays one command per
// line between frames, through the same state and buttons a user drives.
//
//   panel NAME                 show a panel's tab                kind FORM KIND     pick a job kind
//   set FORM FIELD VALUE       type a value into a form field    press ID           press a button or checkbox
//   press_disabled ID          press a button that must be disabled (nothing may start)
//   slide ID VALUE             move a slider (adapter weights: KIND.FIELD.INDEX)
//   drop PATH                  drop a file or folder on the window  expect_tab NAME  a panel's tab is shown
//   ui_scale S                 Settings > UI scale (0.75 to 3)
//   (a pressed button, checkbox or slider must be drawn inside its visible window: reachable by a user)
//   wait STATE [SECONDS]       job state: running, completed, cancelled, failed (default 600 s)
//   wait_step N [SECONDS]      job progress reaches step N       wait_artifact KIND [SECONDS]  a new artifact
//   wait_frames N              let N frames render               screenshot NAME    save NAME.png
//   open_folder PATH           open an image folder in Data      refresh_models     rescan the workspace
//   select_model PATH          select a file in Models (as listed there)
//   check FILE BASE            compatibility report (Models)     wait_tasks [SECONDS]  reports, folders written
//   expect_message TEXT        the message bar contains TEXT
//   expect_error FORM FIELD [TEXT]  the field is marked invalid (with a message containing TEXT)
//   quit
//   expect_folder_error TEXT   Data shows an error containing TEXT
//   expect_report TEXT         the Models compatibility report contains TEXT
// FORM is train, gallery or merge. Lines starting with '#' are comments. Arguments may use ${train_run_dir}
// (the last training run), ${job_run_dir} (the current job's folder) and ${NAME} for set_var values.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "studio/gui/gui.h"

namespace atelier::gui {

class Script {
 public:
  // Throws Error naming file:line for unknown commands or missing arguments.
  static Script load(const std::filesystem::path& path);

  // Executes commands until one has to wait for later frames. Call once per frame before drawing.
  void update(AppState& app, Ui& ui, double now);
  // A screenshot the current frame should save (cleared when taken).
  std::optional<std::string> take_screenshot();

  void set_var(const std::string& name, const std::string& value) { vars_[name] = value; }

  bool finished() const { return pc_ >= commands_.size() || failed(); }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  struct Command {
    int line = 0;
    std::vector<std::string> args;
    std::string rest(std::size_t from) const;  // arguments from index `from`, joined by spaces
  };
  void fail_at(const Command& c, const std::string& why);
  JobForm& form(AppState& app, const Command& c);

  std::filesystem::path path_;
  std::vector<Command> commands_;
  std::size_t pc_ = 0;
  double started_ = -1;  // when the current waiting command began
  int frames_ = 0;       // frames the current command has waited
  std::size_t artifacts_before_ = 0;
  std::optional<std::string> screenshot_;
  std::string error_;
  std::map<std::string, std::string> vars_;
};

}  // namespace atelier::gui
