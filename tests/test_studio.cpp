// atelier-studio for real under Xvfb: tests/studio/smoke.studio trains a tiny model from the Train panel
// (loss curve, preview, cancel, resume), generates a grid in the Gallery, tries an adapter of another
// base model and an empty folder, and saves screenshots. Built only with the GUI (ATELIER_STUDIO).
#ifdef ATELIER_STUDIO
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "core/config.h"
#include "core/image.h"
#include "core/report.h"
#include "tests/helpers.h"

using namespace atelier;
namespace fs = std::filesystem;

namespace {

// Mean and standard deviation of all channels: a blank or cleared frame has almost no spread.
std::pair<double, double> pixel_stats(const Image& img) {
  double sum = 0, sq = 0;
  for (auto p : img.pixels) sum += p, sq += static_cast<double>(p) * p;
  const double n = static_cast<double>(img.pixels.size());
  const double mean = sum / n;
  return {mean, std::sqrt(std::max(0.0, sq / n - mean * mean))};
}

// Runs a scripted session from `workspace` at `size` (WxH) under Xvfb with a fresh config folder; requires
// a clean exit and returns the session's report.json.
json run_studio_script(const fs::path& dir, const fs::path& workspace, const std::string& size,
                       const std::string& script, const std::vector<std::pair<std::string, fs::path>>& vars) {
  std::string cmd = "cd '" + workspace.string() + "' && xvfb-run -a -s '-screen 0 " + size + "x24' '" +
                    std::string(ATELIER_STUDIO) + "' --size " + size + " --script '" +
                    test::source_path(script).string() + "' --screenshot-dir '" + (dir / "shots").string() +
                    "' --config-dir '" + (dir / "config").string() + "'";
  for (const auto& [name, value] : vars) cmd += " --var " + name + "=" + value.string();
  cmd += " > '" + (dir / "studio.log").string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log(dir / "studio.log");
  const std::string output((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  INFO(output);
  REQUIRE(rc == 0);
  const json report = load_json_file(dir / "shots" / "report.json");
  INFO(report.dump(2));
  CHECK(report["ok"] == true);
  return report;
}

}  // namespace

TEST_CASE("atelier-studio scripted smoke run under Xvfb", "[studio][gui]") {
  if (std::system("command -v xvfb-run > /dev/null 2>&1") != 0)
    FAIL("xvfb-run is missing (scripts/setup.sh installs it)");
  test::TempDir dir("atelier-studio");
  // An adapter trained on another base model, and a folder without images.
  const fs::path other_base = test::tiny_base_model(dir, 7);
  auto r = test::run_job_file(dir, test::tiny_finetune_job(other_base, "difffit"), "other");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  fs::create_directories(dir / "empty" / "nothing-here");
  fs::create_directories(dir / "ws");

  const fs::path shots = dir / "shots";
  const json report =
      run_studio_script(dir.path(), dir / "ws", "1280x800", "tests/studio/smoke.studio",
                        {{"other_adapter", dir / "other" / "adapter.safetensors"}, {"empty_folder", dir / "empty"}});
  INFO(report.dump(2));

  // The training run: cancelled once, resumed, completed with its model, checkpoints and loss log.
  const fs::path run = dir / "ws" / report["train_run_dir"].get<std::string>();
  CHECK(load_json_file(run / "status.json")["status"] == "completed");
  CHECK(fs::exists(run / "model.safetensors"));
  CHECK(fs::exists(run / "preview.png"));
  const auto events = read_jsonl_log(run / "log.jsonl");
  int resumed = 0, progress = 0;
  for (const auto& e : events) {
    if (e.type == Event::Type::Log && e.message.rfind("resuming train_base", 0) == 0) ++resumed;
    if (e.type == Event::Type::Progress && e.scalars.count("loss")) ++progress;
  }
  CHECK(resumed == 1);
  CHECK(progress > 100);
  // What the Train panel showed: the loss curve, validation losses and the preview grid.
  CHECK(report["training"]["loss_points"].get<int>() > 50);
  CHECK(report["training"]["first_loss_step"].get<int>() < 20);  // the resumed view replays the run's log
  CHECK(report["training"]["val_loss_points"].get<int>() >= 1);
  CHECK(report["training"]["preview"] ==
        (fs::path(report["train_run_dir"].get<std::string>()) / "preview.png").string());
  CHECK(report["training"]["state"] == "completed");

  // The Gallery grid from the trained model; the adapter of another base left no run behind.
  REQUIRE(report["gallery"].size() == 1);
  const fs::path grid = dir / "ws" / report["gallery"][0]["image"].get<std::string>();
  CHECK(load_image(grid).width > 0);
  // The adapter of another base was refused at the field, before Generate (expect_error in the script).

  // Frames keep being drawn while a job trains.
  CHECK(report["training_frames"].get<int>() > 50);

  // Every screenshot is a real frame of the expected size.
  const std::vector<std::string> expected = {"bad_value", "training", "trained", "gallery", "errors", "models"};
  REQUIRE(report["screenshots"].size() == expected.size());
  for (const auto& name : expected) {
    INFO(name);
    const Image shot = load_image(shots / (name + ".png"));
    CHECK(shot.width == 1280);
    CHECK(shot.height == 800);
    const auto [mean, spread] = pixel_stats(shot);
    CHECK(mean > 5);
    CHECK(spread > 10);
  }
  CHECK(fs::exists(dir / "ws" / "data" / "shapes"));
  // Settings persisted for the next launch.
  CHECK(fs::exists(dir / "config" / "settings.json"));
  CHECK(fs::exists(dir / "config" / "imgui.ini"));
}
TEST_CASE("atelier-studio first launch: an artist's path at 1024x700 from an empty workspace", "[studio][gui]") {
  if (std::system("command -v xvfb-run > /dev/null 2>&1") != 0)
    FAIL("xvfb-run is missing (scripts/setup.sh installs it)");
  test::TempDir dir("atelier-first-launch");
  // What the artist brings: a base model of their own with two concept adapters (in the workspace's
  // models/ folder, where Models lists them). Nothing else: no settings, no assets/ in the workspace.
  REQUIRE(test::run_job_file(dir, test::tiny_base_job(), "base").exit_code == 0);
  const fs::path ws = dir / "ws";
  fs::create_directories(ws / "models");
  fs::copy_file(dir / "base" / "model.safetensors", ws / "models" / "tiny_base.safetensors");
  for (const auto& [glyph, slot] : std::vector<std::pair<std::string, int>>{{"spiral", 0}, {"bolt", 1}}) {
    const json job = {{"kind", "ortho_lora"}, {"base", (ws / "models" / "tiny_base.safetensors").string()},
                      {"glyph", glyph},       {"rank", 4},
                      {"alpha", 4},           {"ortho_slot", slot},
                      {"steps", 3},           {"batch", 4},
                      {"sample_steps", 2},    {"eval_samples", 4},
                      {"probe", ""}};
    auto r = test::run_job_file(dir, job, glyph);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    fs::copy_file(dir / glyph / "adapter.safetensors", ws / "models" / (glyph + ".safetensors"));
  }

  const fs::path shots = dir / "shots";
  const json report = run_studio_script(dir.path(), ws, "1024x700", "tests/studio/first_launch.studio",
                                        {{"spiral", ws / "models" / "spiral.safetensors"},
                                         {"bolt", ws / "models" / "bolt.safetensors"},
                                         {"tiny_base", ws / "models" / "tiny_base.safetensors"}});
  INFO(report.dump(2));

  // Generate with the shipped model and the two picked classes: one grid, saved as gallery.png.
  REQUIRE(report["gallery"].size() == 1);
  CHECK(fs::exists(ws / "gallery.png"));
  // "Train on this": DiffFit on the folder Data wrote, with its before/after grids and metrics.
  const fs::path run = ws / report["train_run_dir"].get<std::string>();
  CHECK(load_json_file(run / "config.json")["kind"] == "difffit");
  CHECK(load_json_file(run / "config.json")["images"] == "data/shapes");  // as Data opened it
  CHECK(load_json_file(run / "status.json")["status"] == "completed");
  CHECK(fs::exists(run / "before.png"));
  CHECK(fs::exists(run / "after.png"));
  CHECK(fs::exists(run / "metrics.json"));
  // The merge ran with the slider weights; the dropped PNG restored the Generate settings.
  CHECK(report["job"]["kind"] == "merge");
  CHECK(report["job"]["state"] == "completed");
  const json merged = load_json_file(ws / report["job"]["run_dir"].get<std::string>() / "config.json");
  CHECK(merged["weights"] == json::array({0.8, 0.5}));
  CHECK(report["gallery_form"]["values"]["classes"] == json::array({"circle", "heart"}));
  // The workspace is stored absolute, so a relaunch from anywhere opens it again.
  const json settings = load_json_file(dir / "config" / "settings.json");
  CHECK(settings["workspace"] == fs::canonical(ws).string());
  CHECK(settings["font_scale"] == 1.5);
  for (const auto& name : {"generate", "bad_inputs", "trained", "merged", "scaled"}) {
    INFO(name);
    const Image shot = load_image(shots / (std::string(name) + ".png"));
    CHECK(shot.width == 1024);
    CHECK(shot.height == 700);
  }
}
#endif
