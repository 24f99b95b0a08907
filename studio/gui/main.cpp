// atelier-studio: the desktop app. The main loop follows imgui's example_glfw_opengl3: poll events, start
// a frame, draw the panels, render, swap. Jobs run on the app layer's worker thread; the loop only polls.
//
//   atelier-studio [--workspace DIR] [--config-dir DIR] [--size WxH]
//                  [--script FILE --screenshot-dir DIR [--var NAME=VALUE]...]   (see script.h)
#include <GL/gl.h>
#include <GLFW/glfw3.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <imgui.h>
#include <imgui_stdlib.h>
#include <stb_image_write.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/atomic_file.h"
#include "studio/gui/gui.h"
#include "studio/gui/script.h"

namespace fs = std::filesystem;
using namespace atelier;
using namespace atelier::gui;

namespace {

std::vector<std::string> dropped;  // paths dropped on the window since the last frame

struct Options {
  fs::path workspace, config_dir, script, screenshot_dir;
  std::vector<std::pair<std::string, std::string>> vars;
  int width = 1280, height = 800;
};

void usage_error(const std::string& why) {
  std::fprintf(stderr,
               "atelier-studio: %s\nusage: atelier-studio [--workspace DIR] [--config-dir DIR] "
               "[--script FILE --screenshot-dir DIR [--var NAME=VALUE]] [--size WxH]\n",
               why.c_str());
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  o.config_dir = xdg ? fs::path(xdg) / "atelier" : fs::path(home ? home : ".") / ".config" / "atelier";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--workspace")
      o.workspace = value();
    else if (a == "--config-dir")
      o.config_dir = value();
    else if (a == "--script")
      o.script = value();
    else if (a == "--screenshot-dir")
      o.screenshot_dir = value();
    else if (a == "--var") {
      const std::string v = value();
      const auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0) usage_error("--var: expected NAME=VALUE, got '" + v + "'");
      o.vars.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (a == "--size") {
      const std::string v = value();
      if (std::sscanf(v.c_str(), "%dx%d", &o.width, &o.height) != 2 || o.width < 320 || o.height < 240)
        usage_error("--size: expected WxH (at least 320x240), got '" + v + "'");
    } else if (a == "--help" || a == "-h") {
      usage_error("the Atelier desktop app");
    } else {
      usage_error("unknown argument '" + a + "'");
    }
  }
  if (!o.script.empty() && o.screenshot_dir.empty()) o.screenshot_dir = "studio-screenshots";
  // The app changes into the workspace: paths given on the command line are taken from where it started.
  for (fs::path* p : {&o.config_dir, &o.script, &o.screenshot_dir, &o.workspace})
    if (!p->empty()) *p = fs::absolute(*p);
  return o;
}

// Reads the frame's back buffer into a PNG (bottom-up rows flipped).
void save_screenshot(const fs::path& path, int width, int height) {
  std::vector<unsigned char> rgba(static_cast<std::size_t>(width) * height * 4);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadPixels(0, 0, width, height, GL_RGBA, GL_UNSIGNED_BYTE, rgba.data());
  std::vector<unsigned char> flipped(rgba.size());
  const std::size_t row = static_cast<std::size_t>(width) * 4;
  for (int y = 0; y < height; ++y) std::copy_n(&rgba[(height - 1 - y) * row], row, &flipped[y * row]);
  std::string png;
  auto append = [](void* out, void* data, int size) {
    static_cast<std::string*>(out)->append(static_cast<char*>(data), size);
  };
  if (!stbi_write_png_to_func(append, &png, width, height, 4, flipped.data(), static_cast<int>(row)))
    fail(path.string(), ": PNG encoding failed");
  write_file_atomic(path, png);
}

void load_font(float scale) {
  ImGuiIO& io = ImGui::GetIO();
  for (const char* f : {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"}) {
    if (fs::exists(f) && io.Fonts->AddFontFromFileTTF(f, 15.0f * scale) != nullptr) return;
  }
  ImFontConfig config;
  config.SizePixels = 13.0f * scale;
  io.Fonts->AddFontDefault(&config);
}

// Text and widgets at `scale`: the font is rasterised again at that size (sharp, unlike a scaled bitmap) and
// the style's sizes are scaled from the defaults. Before the renderer backend starts (it makes the font
// texture) or between frames (`rebuild_texture`).
void apply_scale(float scale, bool rebuild_texture) {
  ImGui::GetIO().Fonts->Clear();
  load_font(scale);
  if (rebuild_texture) {
    ImGui_ImplOpenGL3_DestroyFontsTexture();
    ImGui_ImplOpenGL3_CreateFontsTexture();
  }
  ImGui::GetStyle() = ImGuiStyle();
  ImGui::StyleColorsDark();
  ImGui::GetStyle().ScaleAllSizes(scale);
}

void draw_menu(AppState& app, Ui& ui, bool& quit) {
  if (!ImGui::BeginMainMenuBar()) return;
  if (ImGui::BeginMenu("File")) {
    if (ImGui::MenuItem("Refresh models")) app.refresh_models();
    if (ImGui::MenuItem("Quit")) quit = true;
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("View")) {
    for (const char* name : {"Models", "Data", "Gallery", "Train", "Merge", "Log"})
      if (ImGui::MenuItem(std::string(name) == "Gallery" ? "Generate" : name)) ui.focus = name;
    ImGui::Separator();
    if (ImGui::MenuItem("Reset layout")) ui.sidebar_width = 0;
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("Settings")) {
    ImGui::SetNextItemWidth(120 * ui.scale);
    ImGui::InputInt("job threads (0: all)", &app.settings.job_threads);
    static std::string workspace;
    if (ImGui::IsWindowAppearing()) workspace = app.settings.workspace;
    ImGui::SetNextItemWidth(320 * ui.scale);
    ImGui::InputText("##workspace", &workspace);
    ImGui::SameLine();
    if (ImGui::Button("Open workspace")) {
      try {
        app.open_workspace(workspace);
        app.show_message("workspace: " + app.settings.workspace, false);
      } catch (const std::exception& e) {
        app.show_message(e.what(), true);
      }
    }
    ImGui::SetNextItemWidth(320 * ui.scale);
    ImGui::InputText("runs folder", &app.settings.runs_dir);
    static float scale = 1;
    if (ImGui::IsWindowAppearing()) scale = ui.scale;
    ImGui::SetNextItemWidth(120 * ui.scale);
    ImGui::SliderFloat("UI scale", &scale, 0.75f, 3.0f, "%.2f");
    if (ImGui::IsItemDeactivatedAfterEdit()) ui.pending_scale = scale;
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("text and widget size (kept for the next launch)");
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("Debug")) {
    ImGui::MenuItem("ImGui demo window", nullptr, &ui.show_demo);
    ImGui::EndMenu();
  }
  if (app.job.state == JobState::Running) {
    ImGui::Separator();
    ImGui::Text("%s %lld/%lld", app.job.kind.c_str(), static_cast<long long>(app.job.step),
                static_cast<long long>(app.job.total));
  }
  if (!app.message.empty()) {
    ImGui::Separator();
    const ImVec4 color = app.message_is_error ? ImVec4(1.0f, 0.35f, 0.3f, 1.0f) : ImVec4(0.55f, 0.85f, 0.55f, 1.0f);
    ImGui::TextColored(color, "%s", app.message.c_str());
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", app.message.c_str());
  }
  ImGui::EndMainMenuBar();
}

struct FrameStats {
  int frames = 0, training_frames = 0;
  double max_ms = 0, max_training_ms = 0, total_training_ms = 0;
  std::vector<std::pair<int, double>> slow;  // (frame, ms) of frames over 50 ms
  void add(double ms, bool training) {
    // The first frames build the font atlas and shaders: not representative.
    if (++frames <= 3) return;
    if (ms > 50 && slow.size() < 100) slow.emplace_back(frames, ms);
    max_ms = std::max(max_ms, ms);
    if (training) {
      ++training_frames;
      total_training_ms += ms;
      max_training_ms = std::max(max_training_ms, ms);
    }
  }
};

json report(const AppState& app, const Ui& ui, const Script* script, const FrameStats& stats,
            const std::vector<std::string>& screenshots) {
  json gallery = json::array();
  for (const auto& g : app.gallery_items) gallery.push_back({{"image", g.image.string()}, {"label", g.label}});
  const JobView& training = app.job_owner == Owner::Train ? app.job : app.last_training;
  json artifacts = json::object();
  for (const auto& [k, v] : app.job.artifacts) artifacts[k] = v.string();
  return {{"ok", script == nullptr || !script->failed()},
          {"error", script ? script->error() : ""},
          {"frames", stats.frames},
          {"max_frame_ms", stats.max_ms},
          {"training_frames", stats.training_frames},
          {"slow_frames", stats.slow},
          {"max_frame_ms_training", stats.max_training_ms},
          {"mean_frame_ms_training", stats.training_frames ? stats.total_training_ms / stats.training_frames : 0.0},
          {"job",
           {{"kind", app.job.kind},
            {"state", job_state_name(app.job.state)},
            {"run_dir", app.job.run_dir.string()},
            {"step", app.job.step},
            {"total", app.job.total},
            {"loss_points", app.job.loss.size()},
            {"artifacts", artifacts},
            {"error", app.job.error}}},
          {"train_run_dir", app.train_run_dir},
          {"training",
           {{"loss_points", training.loss.size()},
            {"first_loss_step", training.loss.empty() ? -1 : training.loss.front().first},
            {"val_loss_points", training.val_loss.size()},
            {"preview", training.artifacts.count("preview") ? training.artifacts.at("preview").string() : ""},
            {"state", job_state_name(training.state)}}},
          {"gallery", gallery},
          {"models", app.models.size()},
          {"tabs", ui.selected},
          {"workspace", app.settings.workspace},
          {"train_form", {{"kind", app.train.kind}, {"values", app.train.values}, {"error", app.train.error}}},
          {"gallery_form", {{"values", app.gallery.values}, {"error", app.gallery.error}}},
          {"merge_form", {{"values", app.merge.values}, {"error", app.merge.error}}},
          {"message", app.message},
          {"screenshots", screenshots}};
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  std::optional<Script> script;
  try {
    if (!opt.script.empty()) {
      script = Script::load(opt.script);
      script->set_var("screenshot_dir", fs::absolute(opt.screenshot_dir).string());
      for (const auto& [name, value] : opt.vars) script->set_var(name, value);
    }
    if (!opt.screenshot_dir.empty()) fs::create_directories(opt.screenshot_dir);
    if (!opt.workspace.empty() && !fs::is_directory(opt.workspace))
      fail("--workspace ", opt.workspace.string(), fs::exists(opt.workspace) ? " is not a folder" : " does not exist");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "atelier-studio: error: %s\n", e.what());
    return 1;
  }

  glfwSetErrorCallback([](int code, const char* text) { std::fprintf(stderr, "GLFW error %d: %s\n", code, text); });
  if (!glfwInit()) {
    std::fprintf(stderr, "atelier-studio: error: cannot open a display (is DISPLAY set? try xvfb-run)\n");
    return 1;
  }
  const char* glsl_version = "#version 130";
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  GLFWwindow* window = glfwCreateWindow(opt.width, opt.height, "Atelier Studio", nullptr, nullptr);
  if (window == nullptr) {
    std::fprintf(stderr, "atelier-studio: error: cannot create an OpenGL 3 window\n");
    glfwTerminate();
    return 1;
  }
  glfwMakeContextCurrent(window);
  glfwSetDropCallback(window, [](GLFWwindow*, int count, const char** paths) {
    for (int i = 0; i < count; ++i) dropped.emplace_back(paths[i]);
  });
  glfwSwapInterval(1);

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  fs::create_directories(opt.config_dir);
  const std::string ini_path = (opt.config_dir / "imgui.ini").string();
  io.IniFilename = ini_path.c_str();
  io.ConfigFlags |= ImGuiConfigFlags_NavEnableKeyboard;
  ImGui::StyleColorsDark();

  int exit_code = 0;
  {
    AppState app(opt.config_dir);
    // The workspace: --workspace, else the one of the last launch (when it still exists), else the folder the
    // app was started in; stored absolute, so a relaunch from anywhere opens the same one.
    std::error_code ec;
    const fs::path workspace = !opt.workspace.empty() ? opt.workspace
                               : !app.settings.workspace.empty() && fs::is_directory(app.settings.workspace, ec)
                                   ? fs::path(app.settings.workspace)
                                   : fs::current_path();
    app.open_workspace(workspace);
    Ui ui;
    ui.sidebar_width = static_cast<float>(app.settings.sidebar_width);
    float sx = 1, sy = 1;
    glfwGetWindowContentScale(window, &sx, &sy);
    ui.scale = app.settings.font_scale > 0 ? static_cast<float>(app.settings.font_scale) : std::max(1.0f, sx);
    apply_scale(ui.scale, false);
    ImGui_ImplGlfw_InitForOpenGL(window, true);
    ImGui_ImplOpenGL3_Init(glsl_version);

    FrameStats stats;
    std::vector<std::string> screenshots;
    const auto t0 = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    bool quit = false;
    while (!glfwWindowShouldClose(window) && !quit) {
      // Idle and unscripted: sleep until input arrives (or a moment passes, to follow a job).
      if (!script && !app.job_running() && !app.tasks_pending())
        glfwWaitEventsTimeout(0.25);
      else
        glfwPollEvents();
      const double frame_start = seconds();
      app.poll();
      if (!dropped.empty()) {
        if (const std::string panel = app.drop(dropped); !panel.empty()) ui.focus = panel;
        dropped.clear();
      }
      if (script) {
        script->update(app, ui, frame_start);
        if (script->finished()) quit = true;
      }

      if (ui.pending_scale > 0) {
        ui.sidebar_width *= ui.pending_scale / ui.scale;
        ui.scale = ui.pending_scale;
        ui.pending_scale = 0;
        app.settings.font_scale = ui.scale;
        apply_scale(ui.scale, true);
      }
      ImGui_ImplOpenGL3_NewFrame();
      ImGui_ImplGlfw_NewFrame();
      ImGui::NewFrame();
      draw_menu(app, ui, quit);
      ui.draw_layout(app);
      if (ui.show_demo) ImGui::ShowDemoWindow(&ui.show_demo);
      ui.focus.clear();

      ImGui::Render();
      int w = 0, h = 0;
      glfwGetFramebufferSize(window, &w, &h);
      glViewport(0, 0, w, h);
      glClearColor(0.10f, 0.10f, 0.12f, 1.0f);
      glClear(GL_COLOR_BUFFER_BIT);
      ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
      double instrumentation = 0;  // screenshot encoding is not part of a UI frame
      if (script) {
        if (auto name = script->take_screenshot()) {
          const double t = seconds();
          const fs::path path = opt.screenshot_dir / (*name + ".png");
          try {
            save_screenshot(path, w, h);
            screenshots.push_back(path.string());
          } catch (const std::exception& e) {
            std::fprintf(stderr, "atelier-studio: error: %s\n", e.what());
          }
          instrumentation = seconds() - t;
        }
      }
      glfwSwapBuffers(window);
      const double frame_ms = (seconds() - frame_start - instrumentation) * 1000.0;
      stats.add(frame_ms, app.job_running());
      // ~60 frames per second at most: leave the cores to the job.
      const double budget = 1.0 / 60.0 - (seconds() - frame_start);
      if (budget > 0) std::this_thread::sleep_for(std::chrono::duration<double>(budget));
    }

    if (script) {
      app.cancel_job();
      if (script->failed()) {
        std::fprintf(stderr, "atelier-studio: script error: %s\n", script->error().c_str());
        exit_code = 1;
      }
      const json r = report(app, ui, &*script, stats, screenshots);
      write_file_atomic(opt.screenshot_dir / "report.json", r.dump(2) + "\n");
      std::printf("frames %d, longest frame %.1f ms (%.1f ms while a job ran, %d frames)\n", stats.frames, stats.max_ms,
                  stats.max_training_ms, stats.training_frames);
    }
    app.settings.sidebar_width = ui.sidebar_width;
    try {
      app.save_settings();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "atelier-studio: error: %s\n", e.what());
    }
    ImGui_ImplOpenGL3_Shutdown();
    ImGui_ImplGlfw_Shutdown();
  }
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  return exit_code;
}
