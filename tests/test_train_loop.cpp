// The training scaffold (core/train_loop.h) and what a new job kind needs: tests/toy/ holds a kind that
// only the test suite registers (toy_cli.cpp: one registration line), run through the same runner, CLI
// and studio forms as the built-in kinds.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/safetensors.h"
#include "core/train_loop.h"
#include "studio/app_state.h"
#include "studio/runner.h"
#include "tests/helpers.h"
#include "tests/toy/toy_job.h"

using namespace atelier;
namespace fs = std::filesystem;

namespace {

json toy_job(std::int64_t steps) {
  return {{"kind", "toy_regression"}, {"steps", steps}, {"checkpoint_every", 10}, {"val_every", 15}};
}

RunResult run_toy(const json& job, const fs::path& run_dir, bool resume, const CancelToken& cancel,
                  std::vector<Event>* events = nullptr) {
  RunRequest req;
  req.job = job;
  req.run_dir = run_dir;
  req.resume = resume;
  JobRunner runner(test::toy_registry());
  Reporter reporter;
  if (events != nullptr)
    reporter.add_sink(std::make_shared<CallbackSink>([events](const Event& e) { events->push_back(e); }));
  return runner.run(runner.prepare(req), reporter, cancel);
}

}  // namespace

TEST_CASE("scheduled_lr: linear warm-up, then constant or cosine to zero", "[train_loop]") {
  CHECK(scheduled_lr(1.0, 0, 4, 100, LrDecay::Constant) == 0.25);
  CHECK(scheduled_lr(1.0, 3, 4, 100, LrDecay::Constant) == 1.0);
  CHECK(scheduled_lr(1.0, 50, 4, 100, LrDecay::Constant) == 1.0);
  CHECK(scheduled_lr(2.0, 4, 4, 104, LrDecay::Cosine) == 2.0);
  CHECK(scheduled_lr(2.0, 54, 4, 104, LrDecay::Cosine) == Approx(1.0));
  CHECK(scheduled_lr(2.0, 103, 4, 104, LrDecay::Cosine) == Approx(0.0).margin(1e-3));
  CHECK(scheduled_lr(1.0, 0, 0, 10, LrDecay::Constant) == 1.0);
}

TEST_CASE("A new job kind: its fields reach the CLI and the studio forms with no edits there", "[train_loop][app]") {
  const JobKind& kind = test::toy_registry().get("toy_regression");
  std::vector<std::string> names;
  for (const auto& f : kind.fields) names.push_back(f.name);
  for (const char* expected : {"steps", "batch", "warmup", "grad_clip", "checkpoint_every", "lr", "ema_decay"})
    CHECK(std::find(names.begin(), names.end(), expected) != names.end());

  test::TempDir dir;
  AppState app(dir / "config", test::toy_registry());
  app.train.set_kind(kind);
  CHECK(app.train.error.empty());
  app.train.set(kind, "warmup", "-3");
  CHECK(app.train.field_errors.count("warmup") == 1);  // the field's name comes with the error as data
  CHECK_THAT(app.train.field_errors["warmup"], Catch::Contains("outside"));

  auto listed = test::run_cli("jobs toy_regression --json", ATELIER_TOY_CLI);
  INFO(listed.output);
  REQUIRE(listed.exit_code == 0);
  CHECK_THAT(listed.output, Catch::Contains("\"step_delay_ms\""));
}

TEST_CASE("TrainLoop: progress, validation cadence and a cancel that resumes to the same weights", "[train_loop]") {
  test::TempDir dir;
  CancelToken none;
  std::vector<Event> events;
  REQUIRE(run_toy(toy_job(40), dir / "full", false, none, &events).status == RunResult::Status::Completed);
  int train = 0, val = 0;
  for (const auto& e : events) {
    if (e.type != Event::Type::Progress) continue;
    if (e.phase == "train") {
      ++train;
      CHECK(std::isfinite(e.scalars.at("loss")));
      CHECK(e.scalars.count("lr") == 1);
    }
    if (e.phase == "val") ++val;
  }
  CHECK(train == 40);
  CHECK(val == 3);  // steps 15, 30 and the last

  // Cancel after step 17: a checkpoint of that step, then --resume finishes with the same bits.
  CancelToken cancel;
  std::vector<Event> first;
  auto stop_at = [&](const Event& e) {
    if (e.type == Event::Type::Progress && e.phase == "train" && e.step == 17) cancel.request();
  };
  RunRequest req;
  req.job = toy_job(40);
  req.run_dir = dir / "cut";
  JobRunner runner(test::toy_registry());
  Reporter reporter;
  reporter.add_sink(std::make_shared<CallbackSink>(stop_at));
  REQUIRE(runner.run(runner.prepare(req), reporter, cancel).status == RunResult::Status::Cancelled);
  CHECK(fs::exists(dir / "cut/checkpoints/step_00000017.safetensors"));
  CHECK_FALSE(fs::exists(dir / "cut/toy.safetensors"));
  REQUIRE(run_toy(toy_job(40), dir / "cut", true, none).status == RunResult::Status::Completed);
  const auto a = safetensors::load(dir / "full/toy.safetensors").tensors;
  const auto b = safetensors::load(dir / "cut/toy.safetensors").tensors;
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) CHECK(torch::equal(t, b.at(name)));
}

TEST_CASE("A new job kind resumes after SIGKILL with the uninterrupted weights", "[train_loop][resume][cli]") {
  json job = toy_job(200);
  job["step_delay_ms"] = 5;  // ~1 s in all: the kill lands while the run trains
  test::check_kill_and_resume(job, "toy.safetensors", ATELIER_TOY_CLI);
}
