// Nothing lost, nothing silent: the non-finite guard, bounded inputs, the run-folder lock, checkpoint
// integrity, output names, paths that are not UTF-8, escaped metadata, reproducible LoRA jobs. Each case
// asserts the one clear error and that nothing was lost.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <thread>

#include "adapters/adapter_file.h"
#include "core/atomic_file.h"
#include "core/image_decode.h"
#include "core/report.h"
#include "core/run_lock.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/shapes_data.h"
#include "studio/runner.h"
#include "tests/helpers.h"

using namespace atelier;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kToy = ATELIER_TOY_CLI;

// Writes `job` and runs it with the toy CLI (the built-in kinds plus toy_regression).
test::CommandResult run_toy(const test::TempDir& dir, const json& job, const std::string& name,
                            const std::string& extra = "") {
  write_file_atomic(dir / (name + ".json"), job.dump());
  return test::run_cli(
      "run -q " + (dir / (name + ".json")).string() + " --run-dir '" + (dir / name).string() + "'" + extra, kToy);
}

json toy(std::int64_t steps) {
  return {{"kind", "toy_regression"}, {"steps", steps}, {"checkpoint_every", 10}, {"val_every", 1000}};
}

std::vector<std::string> checkpoint_names(const fs::path& run) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run / "checkpoints", ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool same_tensors(const fs::path& a, const fs::path& b) {
  const auto x = safetensors::load(a).tensors, y = safetensors::load(b).tensors;
  if (x.size() != y.size()) return false;
  for (const auto& [name, t] : x)
    if (!y.count(name) || !torch::equal(t, y.at(name))) return false;
  return true;
}

}  // namespace

TEST_CASE("A non-finite loss stops the job at that step; the last good checkpoint stays", "[reliability]") {
  test::TempDir dir("atelier-nan");
  json job = toy(40);
  job["nan_at_step"] = 25;
  auto r = run_toy(dir, job, "nan");
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("atelier: error:") && Contains("step 25: non-finite loss"));
  CHECK(checkpoint_names(dir / "nan") ==
        std::vector<std::string>{"step_00000010.safetensors", "step_00000020.safetensors"});
  CHECK_FALSE(fs::exists(dir / "nan/toy.safetensors"));
  CHECK(load_json_file(dir / "nan/status.json")["status"] == "failed");
  // The good checkpoint resumes; with "skip" the bad step is passed over and the job completes.
  auto resumed = test::run_cli("run -q " + (dir / "nan.json").string() + " --run-dir " + (dir / "nan").string() +
                                   " --resume --set nonfinite=skip",
                               kToy);
  INFO(resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Contains("step 25: non-finite loss") && Contains("skipped"));
  CHECK(fs::exists(dir / "nan/toy.safetensors"));
}

TEST_CASE("difffit with lr=1 and no clipping stops at the first non-finite step; sampling NaN weights fails",
          "[reliability][cli]") {
  test::TempDir dir("atelier-nan-difffit");
  const std::string job = test::source_path("assets/jobs/difffit.json").string();
  auto r = test::run_cli("run -q " + job + " --run-dir " + (dir / "run").string() +
                         " --set base=" + test::source_path("assets/models/dit_shapes.safetensors").string() +
                         " --set method=full --set lr=1 --set grad_clip=0 --set steps=20 --set batch=4"
                         " --set eval_per_class=1 --set sample_steps=2 --set probe= --set checkpoint_every=1");
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("non-finite"));
  CHECK_FALSE(fs::exists(dir / "run/adapter.safetensors"));
  // Every checkpoint that was kept holds finite values.
  const auto state = load_latest_training_state(dir / "run");
  REQUIRE(state);
  for (const auto& [name, t] : state->tensors)
    if (t.is_floating_point()) CHECK(torch::isfinite(t).all().item<bool>());

  // A model file with NaN weights: sampling is an error and writes no grid.
  TensorFile base = safetensors::load(test::source_path("assets/models/dit_shapes.safetensors"));
  base.tensors["final_layer.linear.bias"] = base.tensors["final_layer.linear.bias"] * std::nan("");
  safetensors::save(dir / "nan.safetensors", base.tensors, base.metadata);
  json sample = {
      {"kind", "sample"}, {"model", (dir / "nan.safetensors").string()}, {"per_class", 1}, {"steps", 2}, {"probe", ""}};
  auto s = test::run_job_file(dir, sample, "sample");
  CHECK(s.exit_code == 1);
  CHECK_THAT(s.output, Contains("non-finite samples"));
  CHECK_FALSE(fs::exists(dir / "sample/samples.png"));
}

TEST_CASE("Deeply nested JSON is one error, in a job file, in --set and in a model file's metadata",
          "[reliability][cli]") {
  test::TempDir dir("atelier-deep");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  write_file_atomic(dir / "deep.json", R"({"kind": "train_probe", "steps": )" + deep + "}");
  auto r = test::run_cli("run " + (dir / "deep.json").string() + " --run-dir " + (dir / "run").string());
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("deep.json") && Contains("nested deeper than 64"));
  CHECK_FALSE(fs::exists(dir / "run"));
  auto set =
      test::run_cli("run " + test::source_path("assets/jobs/probe.json").string() + " --run-dir " +
                    (dir / "run").string() + " --set 'steps=" + std::string(200, '[') + std::string(200, ']') + "'");
  CHECK(set.exit_code == 1);
  CHECK_THAT(set.output, Contains("--set steps") && Contains("nested deeper"));

  TensorFile base = safetensors::load(test::source_path("assets/models/dit_shapes.safetensors"));
  base.metadata["dit.config"] = deep;
  safetensors::save(dir / "deep.safetensors", base.tensors, base.metadata);
  json sample = {{"kind", "sample"}, {"model", (dir / "deep.safetensors").string()}, {"probe", ""}};
  auto m = test::run_job_file(dir, sample, "sample");
  CHECK(m.exit_code == 1);
  CHECK_THAT(m.output, Contains("deep.safetensors") && Contains("dit.config") && Contains("nested deeper"));
}

TEST_CASE("A run folder is locked while its job runs: a second process is refused with the PID", "[reliability][cli]") {
  test::TempDir dir("atelier-lock");
  {
    RunLock lock(dir / "inproc");
    CHECK_THROWS_WITH(RunLock(dir / "inproc"), Contains("is in use by process " + std::to_string(::getpid())));
  }
  CHECK_NOTHROW(RunLock(dir / "inproc"));  // released with its holder

  json job = toy(200);
  job["step_delay_ms"] = 10;
  write_file_atomic(dir / "slow.json", job.dump());
  pid_t pid = ::fork();
  if (pid == 0) {
    const std::string run_dir = (dir / "run").string(), file = (dir / "slow.json").string();
    ::execl(kToy.c_str(), kToy.c_str(), "run", "-q", file.c_str(), "--run-dir", run_dir.c_str(), nullptr);
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir / "run/config.json") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto second = test::run_cli(
      "run -q " + (dir / "slow.json").string() + " --run-dir " + (dir / "run").string() + " --resume", kToy);
  int status = 0;
  ::waitpid(pid, &status, 0);
  INFO(second.output);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(second.exit_code == 1);
  CHECK_THAT(second.output, Contains("is in use by process " + std::to_string(pid)));
  // The first run was not disturbed: its weights equal an uninterrupted run's.
  REQUIRE(run_toy(dir, job, "alone").exit_code == 0);
  CHECK(same_tensors(dir / "run/toy.safetensors", dir / "alone/toy.safetensors"));
}

TEST_CASE("Resume falls back past a truncated, a damaged or a stray checkpoint and removes stale temp files",
          "[reliability][resume]") {
  test::TempDir dir("atelier-damaged");
  REQUIRE(run_toy(dir, toy(60), "full").exit_code == 0);  // checkpoints 50 and 60 (the final one)
  // A copy of the finished run whose newest checkpoint is damaged, so its resume redoes steps 51-60.
  auto damaged_copy = [&](const std::string& name, const std::function<std::string(std::string)>& damage) {
    fs::copy(dir / "full", dir / name, fs::copy_options::recursive);
    fs::copy_file(dir / "full.json", dir / (name + ".json"));
    fs::remove(dir / name / "toy.safetensors");
    const auto ck = dir / name / "checkpoints" / "step_00000060.safetensors";
    write_file_atomic(ck, damage(read_file(ck)));
    write_file_atomic(dir / name / "toy.tmp-99999-0", "partial");  // a write a kill interrupted
    write_file_atomic(dir / name / "checkpoints/step_00000070.safetensors.tmp-99999-1", "partial");
  };
  damaged_copy("trunc", [](std::string b) { return b.substr(0, b.size() / 2); });
  damaged_copy("flip", [](std::string b) {
    b[b.size() - 7] ^= 0x5a;
    return b;
  });
  damaged_copy("stray", [](std::string b) {
    b[b.size() - 3] ^= 0x11;
    return b;
  });
  fs::copy_file(dir / "stray/checkpoints/step_00000050.safetensors",
                dir / "stray/checkpoints/step_00009999.safetensors");
  for (const std::string& name : std::vector<std::string>{"trunc", "flip", "stray"}) {
    INFO(name);
    auto r = test::run_cli(
        "run " + (dir / (name + ".json")).string() + " --run-dir " + (dir / name).string() + " --resume", kToy);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("step_00000060.safetensors is damaged") && Contains("resuming from step 50"));
    CHECK(same_tensors(dir / "full/toy.safetensors", dir / name / "toy.safetensors"));
    CHECK_FALSE(fs::exists(dir / name / "toy.tmp-99999-0"));
    CHECK_FALSE(fs::exists(dir / name / "checkpoints/step_00000070.safetensors.tmp-99999-1"));
    CHECK(checkpoint_names(dir / name) ==
          std::vector<std::string>{"step_00000050.safetensors", "step_00000060.safetensors"});
  }
}

TEST_CASE("output names a plain file in the run folder; the final checkpoint precedes the outputs",
          "[reliability][cli]") {
  test::TempDir dir("atelier-output");
  for (const std::string& bad :
       std::vector<std::string>{"", "../../x.safetensors", "config.json", "sub/x.safetensors", "x.png"}) {
    INFO(bad);
    json job = toy(5);
    job["output"] = bad;
    auto r = run_toy(dir, job, "bad");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Contains("field 'output'"));
    CHECK_FALSE(fs::exists(dir / "bad"));
  }
  REQUIRE(run_toy(dir, toy(25), "ok").exit_code == 0);
  CHECK(checkpoint_names(dir / "ok").back() == "step_00000025.safetensors");
}

TEST_CASE("Run folders and image names that are not UTF-8 work and log escaped", "[reliability][cli]") {
  test::TempDir dir("atelier-bytes");
  const std::string odd = std::string("run-\xff\xfe-") + "x";
  auto r = run_toy(dir, toy(5), odd);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(load_json_file(dir / odd / "status.json")["status"] == "completed");
  const auto events = read_jsonl_log(dir / odd / "log.jsonl");
  CHECK(events.size() > 5);
  CHECK_THAT(printable(odd), Contains("\\xff\\xfe"));

  // A concept from an image folder whose name and files are not UTF-8 (a JSON job file cannot hold such a
  // path, so it comes with --set).
  const fs::path images = dir / std::string("imgs-\xe9t\xe9");
  fs::create_directories(images);
  for (int i = 0; i < 3; ++i)
    fs::copy_file(test::source_path("tests/fuzz/corpus/fuzz_image_decode/rgb.png"),
                  images / (std::string("\xfe") + std::to_string(i) + ".png"));
  const auto base = test::tiny_base_model(dir, 0);
  json concept_job = {{"kind", "lora"}, {"base", base.string()}, {"steps", 2},        {"batch", 2}, {"rank", 2},
                      {"alpha", 2},     {"sample_every", 100},   {"sample_steps", 2}, {"probe", ""}};
  write_file_atomic(dir / "concept.json", concept_job.dump());
  auto c = test::run_cli("run -q " + (dir / "concept.json").string() + " --run-dir " + (dir / "concept").string() +
                         " --set 'images=" + images.string() + "'");
  INFO(printable(c.output));
  CHECK(c.exit_code == 0);
  CHECK(load_json_file(dir / "concept/status.json")["status"] == "completed");
  CHECK(load_adapter(dir / "concept/adapter.safetensors").info.classes == std::vector<std::string>{"imgs-\\xe9t\\xe9"});
}

TEST_CASE("inspect escapes control characters in a file's metadata", "[reliability][cli]") {
  test::TempDir dir("atelier-escape");
  safetensors::save(dir / "evil.safetensors", {{"w", torch::zeros({2})}},
                    {{"note", "\x1b]0;owned\x07\x1b[31mred\x1b[0m"}, {"\x1b[2Jkey", "v"}});
  auto r = test::run_cli("inspect " + (dir / "evil.safetensors").string());
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find('\x1b') == std::string::npos);
  CHECK_THAT(r.output, Contains("\\x1b[31mred"));
}

TEST_CASE("Inputs are bounded: list lengths, duplicate classes, non-regular job files, image sizes", "[reliability]") {
  test::TempDir dir("atelier-bounds");
  json many = {{"classes", std::vector<std::string>(5000, "circle")}};
  CHECK_THROWS_WITH(from_json<ShapesData>(many), Contains("field 'classes'") && Contains("5000 entries"));
  CHECK_THROWS_WITH(from_json<ShapesData>(json{{"classes", {"circle", "square", "circle"}}}).spec(32),
                    Contains("field 'classes'") && Contains("'circle' is listed twice"));
  CHECK_THROWS_WITH(load_json_file("/dev/zero"), Contains("/dev/zero: not a regular file"));
  std::string big(2 << 20, ' ');
  write_file_atomic(dir / "big.json", "{" + big + "}");
  CHECK_THROWS_WITH(load_json_file(dir / "big.json"), Contains("big.json") && Contains("limit"));
  auto r = test::run_cli("run /dev/zero");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("atelier: error:") && Contains("/dev/zero"));

  // A PNG header claiming 18000 x 18000 pixels: refused from the header, before decoding.
  std::string png = "\x89PNG\r\n\x1a\n";
  auto be32 = [&](std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) png += static_cast<char>((v >> s) & 0xff);
  };
  be32(13);
  png += "IHDR";
  be32(18000);
  be32(18000);
  png += std::string("\x08\x02\x00\x00\x00", 5);
  be32(0);  // CRC (stb does not check it)
  CHECK_THROWS_WITH(decode_image(png, "huge.png"), Contains("huge.png: 18000x18000 pixels is larger than the limit"));

  // A JPEG whose Huffman table claims more than 256 symbols (stb 2.27 would write past its table), and a
  // format outside PNG/JPEG/BMP: refused before stb decodes anything.
  std::string jpeg = read_file(test::source_path("tests/fuzz/corpus/fuzz_image_decode/baseline.jpg"));
  const auto dht = jpeg.find("\xff\xc4");
  REQUIRE(dht != std::string::npos);
  for (int k = 0; k < 16; ++k) jpeg[dht + 5 + k] = static_cast<char>(200);
  CHECK_THROWS_WITH(decode_image(jpeg, "evil.jpg"), Contains("evil.jpg: corrupt JPEG") && Contains("256 symbols"));
  CHECK_THROWS_WITH(decode_image(read_file(test::source_path("tests/fuzz/corpus/fuzz_image_decode/rgb.ppm")), "a.ppm"),
                    Contains("not a PNG, JPEG or BMP file"));
  CHECK_NOTHROW(
      decode_image(read_file(test::source_path("tests/fuzz/corpus/fuzz_image_decode/progressive.jpg")), "ok"));

  // A value that overflows a double names the file.
  write_file_atomic(dir / "inf.json", R"({"kind": "train_probe", "lr": 1e400})");
  auto inf = test::run_cli("run " + (dir / "inf.json").string());
  CHECK(inf.exit_code == 1);
  CHECK_THAT(inf.output, Contains("inf.json"));
}

TEST_CASE("A cancel during evaluation stops at the next sampler step and writes nothing", "[reliability]") {
  test::TempDir dir("atelier-cancel-eval");
  const auto base = test::tiny_base_model(dir, 0);
  json job = test::tiny_finetune_job(base, "difffit");
  job["eval_per_class"] = 64;
  job["sample_steps"] = 50;
  RunRequest req;
  req.job = job;
  req.run_dir = dir / "run";
  JobRunner runner;
  Reporter reporter;
  CancelToken cancel;
  cancel.request();  // before the "before" evaluation starts sampling
  const RunResult r = runner.run(runner.prepare(req), reporter, cancel);
  CHECK(r.status == RunResult::Status::Cancelled);
  CHECK_FALSE(fs::exists(dir / "run/before.json"));
  CHECK_FALSE(fs::exists(dir / "run/before.png"));
}

TEST_CASE("lora and difffit-lora jobs with one seed give one adapter", "[reliability][adapters]") {
  test::TempDir dir("atelier-lora-seed");
  const auto base = test::tiny_base_model(dir, 0);
  json tune = test::tiny_finetune_job(base, "lora");
  tune["probe"] = "";
  json concept_job = {
      {"kind", "lora"}, {"base", base.string()}, {"glyph", "bolt"},   {"steps", 2}, {"batch", 2}, {"rank", 2},
      {"alpha", 2},     {"sample_every", 100},   {"sample_steps", 2}, {"probe", ""}};
  for (const auto& [job, name] : std::vector<std::pair<json, std::string>>{{tune, "tune"}, {concept_job, "concept"}}) {
    REQUIRE(test::run_job_file(dir, job, name + "1").exit_code == 0);
    REQUIRE(test::run_job_file(dir, job, name + "2").exit_code == 0);
    CHECK(same_tensors(dir / (name + "1") / "adapter.safetensors", dir / (name + "2") / "adapter.safetensors"));
  }
}
