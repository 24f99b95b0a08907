#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/presets.h"
#include "diffusion/model_file.h"
#include "studio/runner.h"
#include "tests/helpers.h"

using namespace atelier;
namespace fs = std::filesystem;

namespace {
bool no_temp_files(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return false;
  return true;
}

json tiny_probe_job() {
  return json{{"kind", "train_probe"}, {"steps", 6},        {"batch", 8},           {"width", 4},
              {"val_samples", 16},     {"eval_every", 100}, {"checkpoint_every", 2}};
}

RunResult run_job(const json& job, const fs::path& run_dir, bool resume, const CancelToken& cancel,
                  std::function<void(const Event&)> on_event = nullptr) {
  RunRequest req;
  req.job = job;
  req.run_dir = run_dir;
  req.resume = resume;
  JobRunner runner;
  Reporter reporter;
  if (on_event) reporter.add_sink(std::make_shared<CallbackSink>(on_event));
  return runner.run(runner.prepare(req), reporter, cancel);
}
}  // namespace

TEST_CASE("atomic writes replace whole files or nothing", "[runner]") {
  test::TempDir dir;
  write_file_atomic(dir / "a.txt", "first");
  write_file_atomic(dir / "a.txt", "second");
  CHECK(read_file(dir / "a.txt") == "second");
  {
    AtomicFile f(dir / "a.txt");
    f.write("partial");
    // destroyed without commit(): as if the writer threw
  }
  CHECK(read_file(dir / "a.txt") == "second");
  CHECK(no_temp_files(dir.path()));
  CHECK_THROWS_WITH(safetensors::save(dir / "b.safetensors", {{"x", torch::Tensor()}}), Catch::Contains("undefined"));
  CHECK_FALSE(fs::exists(dir / "b.safetensors"));
  CHECK(no_temp_files(dir.path()));
  CHECK_THROWS_WITH(read_file(dir / "nope.txt"), Catch::Contains("nope.txt"));
}

TEST_CASE("training states keep the newest checkpoints and restore optimizer moments exactly", "[runner]") {
  test::TempDir dir;
  auto train = [](torch::nn::Linear& m, torch::optim::AdamW& opt, int steps, int first) {
    for (int s = first; s < first + steps; ++s) {
      auto x = torch::full({4, 3}, 0.1 * s);
      auto loss = m->forward(x).pow(2).mean();
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
  };
  torch::manual_seed(0);
  torch::nn::Linear ref(3, 2);
  torch::nn::Linear resumed(3, 2);
  resumed->weight.data().copy_(ref->weight.data());
  resumed->bias.data().copy_(ref->bias.data());
  torch::optim::AdamW opt_ref(ref->parameters(), torch::optim::AdamWOptions(0.1));
  train(ref, opt_ref, 10, 0);

  torch::optim::AdamW opt_a(resumed->parameters(), torch::optim::AdamWOptions(0.1));
  train(resumed, opt_a, 5, 0);
  for (int step : {1, 3, 5}) {
    TrainingState s;
    s.step = step;
    s.tensors = module_tensors(*resumed, "model.");
    auto o = optimizer_tensors(opt_a);
    s.tensors.insert(o.begin(), o.end());
    save_training_state(dir.path(), s, 2);
  }
  CHECK_FALSE(fs::exists(dir / "checkpoints/step_00000001.safetensors"));
  CHECK(fs::exists(dir / "checkpoints/step_00000003.safetensors"));
  auto state = load_latest_training_state(dir.path());
  REQUIRE(state);
  CHECK(state->step == 5);

  torch::nn::Linear fresh(3, 2);
  torch::optim::AdamW opt_b(fresh->parameters(), torch::optim::AdamWOptions(0.1));
  load_module_tensors(*fresh, state->tensors, "model.", "ckpt");
  load_optimizer_tensors(opt_b, state->tensors);
  train(fresh, opt_b, 5, 5);
  CHECK(torch::equal(fresh->weight, ref->weight));
  CHECK(torch::equal(fresh->bias, ref->bias));
}

TEST_CASE("strict loading lists every missing, unexpected and mis-shaped key", "[runner]") {
  torch::nn::Linear m(3, 2);
  TensorMap t = {{"weight", torch::zeros({2, 4})}, {"extra", torch::zeros({1})}};
  CHECK_THROWS_WITH(load_module_tensors(*m, t, "", "model.safetensors"),
                    Catch::Contains("model.safetensors") &&
                        Catch::Contains("'weight' has shape [2, 4], expected [2, 3]") &&
                        Catch::Contains("missing 'bias'") && Catch::Contains("unexpected 'extra'"));
}

TEST_CASE("the runner validates jobs and run folders before starting", "[runner]") {
  test::TempDir dir;
  JobRunner runner;
  RunRequest req;
  req.run_dir = dir / "run";
  req.job = json{{"steps", 3}};
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("missing key 'kind'"));
  req.job = json{{"kind", "nope"}};
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("unknown job kind 'nope'") && Catch::Contains("train_probe"));
  req.job = tiny_probe_job();
  req.job["stepz"] = 3;
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("unknown key 'stepz'"));
  req.job = tiny_probe_job();
  req.resume = true;
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("holds no run"));
  req.resume = false;
  CancelToken cancel;
  REQUIRE(runner.run(runner.prepare(req), *std::make_unique<Reporter>(), cancel).status ==
          RunResult::Status::Completed);
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("already holds a run"));
  req.resume = true;
  req.job["lr"] = 0.1;
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("'lr' is 0.1 here"));
  req.overrides = {"lr=0.1"};
  CHECK_NOTHROW(runner.prepare(req));
  // --set kind=... picks the job kind (read after the overrides); resuming a run of another kind fails.
  req.overrides = {"lr=0.1", "kind=sample"};
  CHECK_THROWS_WITH(runner.prepare(req), Catch::Contains("'sample' job") && Catch::Contains("'train_probe' run"));
  req.overrides = {"lr=0.1"};
  auto config = load_json_file(dir / "run/config.json");
  CHECK(config["kind"] == "train_probe");
  CHECK(config["steps"] == 6);
  CHECK(config.contains("noise_aug"));  // effective config holds every field
  CHECK(load_json_file(dir / "run/status.json")["status"] == "completed");
  CHECK(fs::exists(dir / "run/log.jsonl"));
}

TEST_CASE("a cancelled job resumes to the same weights as an uninterrupted run", "[runner][resume]") {
  test::TempDir dir;
  CancelToken never;
  REQUIRE(run_job(tiny_probe_job(), dir / "full", false, never).status == RunResult::Status::Completed);

  CancelToken cancel;
  auto first = run_job(tiny_probe_job(), dir / "cut", false, cancel, [&](const Event& e) {
    if (e.type == Event::Type::Progress && e.phase == "train" && e.step == 3) cancel.request();
  });
  CHECK(first.status == RunResult::Status::Cancelled);
  CHECK(load_json_file(dir / "cut/status.json")["status"] == "cancelled");
  CHECK(fs::exists(dir / "cut/checkpoints/step_00000003.safetensors"));
  CHECK_FALSE(fs::exists(dir / "cut/probe.safetensors"));

  CancelToken fresh;
  REQUIRE(run_job(tiny_probe_job(), dir / "cut", true, fresh).status == RunResult::Status::Completed);
  auto a = safetensors::load(dir / "full/probe.safetensors").tensors;
  auto b = safetensors::load(dir / "cut/probe.safetensors").tensors;
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) CHECK(torch::equal(t, b.at(name)));
  CHECK(no_temp_files(dir.path()));
}

TEST_CASE("SIGKILL during training, then --resume, ends with the uninterrupted weights", "[runner][resume][cli]") {
  json j = tiny_probe_job();
  j["steps"] = 120;
  test::check_kill_and_resume(j, "probe.safetensors");
}

TEST_CASE("train_base: SIGKILL, then --resume, ends with the uninterrupted weights", "[runner][resume][cli]") {
  json j = {{"kind", "train_base"}, {"model", "DiT-T/4"},
            {"hidden_size", 32},    {"depth", 2},
            {"num_heads", 2},       {"image_size", 16},
            {"steps", 200},         {"batch", 4},
            {"warmup", 5},          {"checkpoint_every", 3},
            {"val_every", 1000},    {"sample_every", 1000},
            {"sample_steps", 2},    {"classes", {"circle", "square"}}};
  test::check_kill_and_resume(j, "model.safetensors");
}

TEST_CASE("train_base on an image folder: the folder's classes, seeded epochs, SIGKILL and --resume are exact",
          "[runner][resume][cli]") {
  test::TempDir data;
  // 6 images: a batch of 4 crosses epoch borders, so the resumed run must redraw the same epochs.
  write_shapes_folder({{"classes", {"circle", "star", "heart"}}}, 16, 6, data / "mine");
  json j = test::tiny_base_job();
  j["images"] = (data / "mine").string();
  j["steps"] = 150;
  j["checkpoint_every"] = 3;
  test::check_kill_and_resume(j, "model.safetensors");

  j["steps"] = 2;
  auto f = test::run_job_file(data, j, "folder");
  INFO(f.output);
  REQUIRE(f.exit_code == 0);
  DiTModelInfo info;
  (void)load_dit_model(data / "folder/model.safetensors", &info);
  CHECK(info.class_names == std::vector<std::string>{"circle", "heart", "star"});
  CHECK(info.dit.num_classes == 3);
  CHECK(info.data == (data / "mine").string());
  CHECK_THAT(read_file(data / "folder/log.jsonl"), Catch::Contains("6 images in"));

  j["images"] = (data / "missing").string();
  auto bad = test::run_job_file(data, j, "bad");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Catch::Contains("'images'") && Catch::Contains("does not exist"));
}

TEST_CASE("difffit: SIGKILL, then --resume, ends with the uninterrupted adapter", "[runner][resume][cli]") {
  test::TempDir dir;
  auto r = test::run_job_file(dir, test::tiny_base_job(), "base");
  REQUIRE(r.exit_code == 0);
  json j = {{"kind", "difffit"},
            {"base", (dir / "base/model.safetensors").string()},
            {"classes", {"circle"}},
            {"styles", {"night"}},
            {"steps", 150},
            {"batch", 4},
            {"checkpoint_every", 3},
            {"sample_every", 1000},
            {"sample_steps", 2},
            {"eval_per_class", 1},
            {"probe", ""}};
  test::check_kill_and_resume(j, "adapter.safetensors");
}

TEST_CASE("ortho_lora: SIGKILL, then --resume, ends with the uninterrupted adapter", "[runner][resume][cli]") {
  test::TempDir dir;
  REQUIRE(test::run_job_file(dir, test::tiny_base_job(), "base").exit_code == 0);
  json j = {{"kind", "ortho_lora"}, {"base", (dir / "base/model.safetensors").string()},
            {"glyph", "moon"},      {"rank", 4},
            {"alpha", 4},           {"steps", 150},
            {"batch", 4},           {"checkpoint_every", 3},
            {"sample_every", 1000}, {"sample_steps", 2},
            {"probe", ""}};
  test::check_kill_and_resume(j, "adapter.safetensors");
}
