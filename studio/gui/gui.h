// atelier-studio: panels and the widgets they share. Only this folder includes ImGui/GLFW/OpenGL; the
// panels draw from and edit the app layer's AppState and never touch torch.
#pragma once
#include <imgui.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "core/pixels.h"
#include "data/presets.h"
#include "studio/app_state.h"
#include "studio/model_ops.h"

namespace atelier::gui {

// OpenGL textures of image files (reloaded when the file changes) and of in-memory pictures.
class TextureCache {
 public:
  struct Texture {
    unsigned id = 0;
    int width = 0, height = 0;
    std::filesystem::file_time_type mtime{};
  };
  ~TextureCache();
  // Null when the file cannot be read (the reason in `error`).
  const Texture* file(const std::filesystem::path& path, std::string* error = nullptr);
  const Texture* picture(const std::string& key, const Image& image);
  void forget(const std::string& key_prefix);

 private:
  std::map<std::string, Texture> textures_;
};

// Per-frame UI state the panels share: scripted presses, tab focus requests, the layout, textures.
//
// The layout is recomputed from the window's size every frame: a sidebar (Models, Data) and the main area
// (Generate, Train, Merge, Log) as tabs, split by a draggable bar; nothing can end up off-screen or overlap.
struct Ui {
  std::set<std::string> pressed;        // button and checkbox ids the script presses on the next frame
  std::map<std::string, float> slides;  // slider ids the script sets on the next frame
  std::string pressed_disabled;         // a scripted press that hit a disabled button (the script fails)
  std::string pressed_hidden;           // a scripted press on a button outside the visible window (the script fails)
  std::string focus;                    // panel whose tab to select this frame
  std::map<std::string, std::string> selected;  // tab bar -> the panel shown in it (for the script's report)
  float sidebar_width = 0;                      // 0: the default share of the window
  bool show_demo = false;
  TextureCache textures;
  float scale = 1.0f;
  float pending_scale = 0;  // a UI scale chosen in Settings, applied between frames (the font is rebuilt)

  // A button that the script can press by id; disabled buttons show `why_disabled` as a tooltip.
  bool button(const std::string& id, const char* label, bool enabled = true, const std::string& why_disabled = {});
  // A checkbox the script can click by id, and a slider it can set.
  bool checkbox(const std::string& id, const char* label, bool& on);
  bool slider(const std::string& id, float& value, float min, float max);
  // The whole frame: sidebar and main area placed from the viewport, each a tab bar of panels.
  void draw_layout(AppState& app);
  // Begins a panel's tab (selected by a focus request) with its own scrolling region; end_panel closes it.
  bool begin_panel(const char* name);
  void end_panel();
  float default_sidebar_width() const;
};

// A path field with a browse button opening the in-app file browser. Returns true when it changed.
bool path_field(Ui& ui, const char* label, std::string& path, bool folders, const char* extension = nullptr);
// The form generated from a job kind's typed config: one widget per field, help and range as tooltips,
// invalid fields in red with the reason. Returns true when a value changed (the form is re-validated).
bool job_form(Ui& ui, AppState& app, JobForm& form, const JobKind& kind);
// Draws a texture scaled to `width` (keeps the aspect ratio); nothing when null.
void image(const TextureCache::Texture* t, float width);
// A large image in a region of `size` (fit to it, or zoomed with the mouse wheel / the zoom slider, then
// scrollable). `zoom` (0: fit) is kept by the caller.
void image_view(const char* id, const TextureCache::Texture* t, ImVec2 size, float& zoom);
// A series (step, value) as a line plot with axes, step and value labels, raw values faint and an
// exponential moving average (`smoothing` in [0, 1)) on top.
void plot_series(const char* id, const std::vector<std::pair<std::int64_t, float>>& series, ImVec2 size,
                 float smoothing, const char* title);
// A field label with its help as tooltip, full width of its column.
void field_label(const char* text, const std::string& help, bool bad = false);
// State, progress bar, it/s and ETA of the current job.
void draw_job_progress(AppState& app, Ui& ui);
// A problem in red, wrapped (form errors, folder errors, job errors).
void error_text(const std::string& text);
// The message bar (red for errors).
void message_bar(AppState& app);

void draw_models_panel(AppState& app, Ui& ui);
void draw_data_panel(AppState& app, Ui& ui);
void draw_train_panel(AppState& app, Ui& ui);
void draw_gallery_panel(AppState& app, Ui& ui);
void draw_merge_panel(AppState& app, Ui& ui);
void draw_log_panel(AppState& app, Ui& ui);

}  // namespace atelier::gui
