// The app layer the GUI drives: generated job forms, jobs on a worker thread (progress, cancel, resume),
// input checks before a job starts, and what the Models/Data panels read from disk.
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "data/presets.h"
#include "studio/app_state.h"
#include "studio/job_session.h"
#include "studio/model_ops.h"
#include "studio/workspace.h"
#include "tests/helpers.h"

using namespace atelier;
namespace fs = std::filesystem;

namespace {

// Polls until `done(view)` or the timeout; returns the final view.
template <class F>
JobView poll_until(JobSession& session, JobView view, F done, double seconds = 120) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    session.poll(view);
    if (done(view)) return view;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL("timed out; job state " << job_state_name(view.state) << ", step " << view.step << ", error " << view.error);
  return view;
}

json tiny_training(std::int64_t steps) {
  json j = test::tiny_base_job();
  j["steps"] = steps;
  j["checkpoint_every"] = 10;
  j.erase("kind");
  return j;
}

}  // namespace

TEST_CASE("Job forms: defaults are valid, bad values name their field and block the job", "[app]") {
  const JobKind& kind = JobRegistry::builtin().get("train_base");
  JobForm form;
  form.set_kind(kind);
  CHECK(form.error.empty());
  CHECK(form.values["steps"] == kind.normalize(json::object())["steps"]);

  form.set(kind, "steps", "-5");
  CHECK_THAT(form.error, Catch::Contains("field 'steps'"));
  CHECK(form.field_errors.count("steps") == 1);
  test::TempDir config("atelier-app");
  AppState app(config.path());
  CHECK_FALSE(app.start_job(form, Owner::Train, "never-created"));
  CHECK(app.message_is_error);
  CHECK_FALSE(fs::exists("never-created"));

  form.set(kind, "steps", "10");
  form.set(kind, "classes", "[\"circle\", ");  // unfinished JSON list
  CHECK(form.field_errors.count("classes") == 1);
  form.set(kind, "classes", "[\"circle\", \"star\"]");
  CHECK(form.error.empty());
  CHECK(form.effective["classes"] == json({"circle", "star"}));
  CHECK_THROWS_WITH(form.set(kind, "stepz", "1"), Catch::Contains("no field 'stepz'"));

  // Switching kinds keeps the values the new kind shares.
  form.set_kind(JobRegistry::builtin().get("difffit"), true);
  CHECK(form.values["steps"] == 10);

  // Prompts (Input::Text) are edited one per line, commas and all; comma lists stay comma lists.
  const JobKind& sample = JobRegistry::builtin().get("sample");
  JobForm gallery;
  gallery.set_kind(sample);
  gallery.json_text["prompts"] = "a cat, watercolor\n\n  a red circle on white  \n";
  gallery.json_text["classes"] = "circle, heart";
  gallery.validate(sample);
  CHECK(gallery.values["prompts"] == json({"a cat, watercolor", "a red circle on white"}));
  CHECK(gallery.values["classes"] == json({"circle", "heart"}));
  gallery.set_value(sample, "prompts", json({"one, two", "three"}));
  CHECK(gallery.json_text["prompts"] == "one, two\nthree");
}

TEST_CASE("A job on the worker thread reports progress, cancels and resumes to the same weights", "[app][runner]") {
  test::TempDir dir("atelier-session");
  JobSession session;
  RunRequest request{tiny_training(400), "test", {}, dir / "run", false};
  request.job["kind"] = "train_base";
  CHECK_THROWS_WITH(
      session.start(RunRequest{json{{"kind", "train_base"}, {"stepz", 1}}, "test", {}, dir / "bad", false}),
      Catch::Contains("stepz"));
  CHECK_FALSE(fs::exists(dir / "bad"));

  session.start(request);
  JobView view = poll_until(session, JobView{}, [](const JobView& v) { return v.step >= 20; });
  CHECK(view.state == JobState::Running);
  CHECK_THROWS_WITH(session.start(request), Catch::Contains("already running"));
  session.cancel();
  view = poll_until(session, view, [](const JobView& v) { return v.state != JobState::Running; });
  REQUIRE(view.state == JobState::Cancelled);
  CHECK_FALSE(view.loss.empty());
  CHECK(view.artifacts.count("checkpoint") == 1);
  const std::int64_t stopped_at = view.step;
  CHECK(stopped_at < 400);

  request.resume = true;
  session.start(request);
  view = poll_until(
      session, JobView{}, [](const JobView& v) { return v.state != JobState::Running; }, 300);
  INFO(view.error);
  REQUIRE(view.state == JobState::Completed);
  CHECK(view.step == 400);
  CHECK(fs::exists(view.artifacts.at("model")));
  CHECK(view.artifacts.at("model") == dir / "run" / "model.safetensors");
}

TEST_CASE("Inputs are checked before a job starts: adapters of another base, empty image folders", "[app]") {
  test::TempDir dir("atelier-preflight");
  const fs::path base0 = test::tiny_base_model(dir, 0);
  const fs::path base1 = test::tiny_base_model(dir, 1);
  auto r = test::run_job_file(dir, test::tiny_finetune_job(base0, "difffit"), "tune");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const fs::path adapter = dir / "tune" / "adapter.safetensors";

  const ModelFileInfo info = read_model_file_info(adapter);
  CHECK(info.kind == "adapter");
  CHECK(info.method == "difffit");
  CHECK(info.adapter_method == AdapterMethod::DiffFit);
  CHECK(info.classes == std::vector<std::string>{"circle", "square"});
  CHECK(read_model_file_info(base0).kind == "dit");
  CHECK_FALSE(read_model_file_info(dir / "tune" / "config.json").error.empty());
  const auto listed = scan_model_files({dir.path()});
  CHECK(std::count_if(listed.begin(), listed.end(), [](const ModelFileInfo& m) { return m.kind == "dit"; }) >= 2);

  JobSession session;
  RunRequest wrong{{{"kind", "sample"}, {"model", base1.string()}, {"adapters", {adapter.string()}}, {"probe", ""}},
                   "test",
                   {},
                   dir / "wrong",
                   false};
  session.start(wrong);  // the runner checks the inputs first
  JobView view = poll_until(session, JobView{}, [](const JobView& v) { return v.state != JobState::Running; });
  CHECK(view.state == JobState::Failed);
  CHECK_THAT(view.error, Catch::Contains(adapter.string()) && Catch::Contains("was trained on another base model"));
  CHECK_FALSE(fs::exists(dir / "wrong"));  // nothing started

  CHECK_THAT(compatibility_report(adapter, base1), Catch::Contains("MISMATCH"));
  CHECK_THAT(compatibility_report(adapter, base0), Catch::Contains("base model: matches"));

  fs::create_directories(dir / "empty" / "sub");
  CHECK_THROWS_WITH(scan_image_folder(dir / "empty"), Catch::Contains((dir / "empty").string()));
  AppState app(dir / "config");
  app.open_folder((dir / "empty").string());
  CHECK_FALSE(app.folder_error.empty());
  CHECK_FALSE(app.folder.has_value());
}

TEST_CASE("Shapes presets render and write folder datasets; settings persist", "[app]") {
  test::TempDir dir("atelier-presets");
  for (const auto& p : shapes_presets()) {
    INFO(p.name);
    const auto images = render_shapes(p.data, 32, 4);
    REQUIRE(images.size() == 4);
    CHECK(images[0].width == 32);
  }
  CHECK_THROWS_WITH(render_shapes(json{{"styles", {"neon"}}}, 32, 1), Catch::Contains("neon"));
  write_shapes_folder(shapes_presets()[0].data, 16, 12, dir / "shapes");
  const ImageFolderInfo folder = scan_image_folder(dir / "shapes");
  CHECK(folder.items.size() == 12);
  CHECK(folder.classes.size() > 1);
  CHECK_FALSE(folder.items[0].caption.empty());

  {
    AppState app(dir / "config");
    app.settings.job_threads = 1;
    app.open_folder((dir / "shapes").string());
    app.save_settings();
  }
  AppState again(dir / "config");
  CHECK(again.settings.job_threads == 1);
  REQUIRE(again.settings.recent_folders.size() == 1);
  CHECK(again.settings.recent_folders[0] == (dir / "shapes").string());
}
