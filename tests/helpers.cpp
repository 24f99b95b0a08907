#include "tests/helpers.h"

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "studio/job_registry.h"
#include "tests/toy/toy_job.h"

namespace atelier::test {
namespace fs = std::filesystem;

TempDir::TempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  path_ = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

CommandResult run_cli(const std::string& args, const std::string& cli) {
  CommandResult r;
  std::string cmd = cli + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.insert(r.output.end(), buf, buf + n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

fs::path source_path(const std::string& relative) {
  return fs::path(ATELIER_SOURCE_DIR) / relative;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

double relative_diff(const torch::Tensor& out, const torch::Tensor& ref) {
  const double d = max_abs_diff(out, ref) / std::max(1.0, ref.abs().max().item<double>());
  UNSCOPED_INFO("relative max abs diff " << d);
  return d;
}

CommandResult run_job_file(const TempDir& dir, const nlohmann::json& job, const std::string& name) {
  const auto path = dir / (name + ".json");
  write_file_atomic(path, job.dump());
  return run_cli("run -q " + path.string() + " --run-dir " + (dir / name).string());
}

DiTConfig tiny_dit_config(std::int64_t hidden, std::int64_t depth, std::int64_t size, std::int64_t channels,
                          std::int64_t classes) {
  DiTConfig c = dit_preset("DiT-T/4");
  c.hidden_size = hidden;
  c.depth = depth;
  c.num_heads = 2;
  c.patch_size = 2;
  c.input_size = size;
  c.in_channels = channels;
  c.num_classes = classes;
  return c;
}

nlohmann::json tiny_base_job(std::int64_t seed) {
  return {{"kind", "train_base"}, {"model", "DiT-T/4"},
          {"hidden_size", 32},    {"depth", 2},
          {"num_heads", 2},       {"image_size", 16},
          {"steps", 2},           {"batch", 4},
          {"warmup", 1},          {"sample_steps", 2},
          {"val_every", 1000},    {"sample_every", 1000},
          {"seed", seed},         {"classes", {"circle", "square"}}};
}

std::filesystem::path tiny_base_model(const TempDir& dir, int seed) {
  const std::string name = "base" + std::to_string(seed);
  auto r = run_job_file(dir, tiny_base_job(seed), name);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return dir / name / "model.safetensors";
}

nlohmann::json tiny_finetune_job(const std::filesystem::path& base, const std::string& method) {
  return {{"kind", "difffit"},
          {"base", base.string()},
          {"method", method},
          {"classes", {"circle", "square"}},
          {"styles", {"night"}},
          {"steps", 4},
          {"batch", 4},
          {"checkpoint_every", 2},
          {"sample_every", 1000},
          {"sample_steps", 2},
          {"eval_per_class", 2},
          {"reference_samples", 16},
          {"probe", source_path("assets/models/probe.safetensors").string()}};
}

// Runs `job` once uninterrupted and once SIGKILLed as soon as any training checkpoint exists (rotation
// deletes each one a few intervals later, so no single name is waited for), then resumes the killed run:
// its `output` must equal the uninterrupted run's bit for bit.
void check_kill_and_resume(const nlohmann::json& job_doc, const std::string& output, const std::string& cli) {
  TempDir dir;
  std::string job = (dir / "job.json").string();
  write_file_atomic(job, job_doc.dump());
  auto full = run_cli("run -q " + job + " --run-dir " + (dir / "full").string(), cli);
  INFO(full.output);
  REQUIRE(full.exit_code == 0);

  pid_t pid = ::fork();
  if (pid == 0) {
    std::string run_dir = (dir / "killed").string();
    ::execl(cli.c_str(), cli.c_str(), "run", "-q", job.c_str(), "--run-dir", run_dir.c_str(), nullptr);
    ::_exit(127);
  }
  const auto has_checkpoint = [&] {
    std::error_code ec;  // the folder does not exist before the first checkpoint
    for (const auto& e : fs::directory_iterator(dir / "killed/checkpoints", ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("step_", 0) == 0 && e.path().extension() == ".safetensors") return true;  // not a .tmp-
    }
    return false;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!has_checkpoint() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE_FALSE(fs::exists(dir / "killed" / output));

  auto resumed = run_cli("run -q " + job + " --run-dir " + (dir / "killed").string() + " --resume", cli);
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  auto a = safetensors::load(dir / "full" / output).tensors;
  auto b = safetensors::load(dir / "killed" / output).tensors;
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) CHECK(torch::equal(t, b.at(name)));
}

const JobRegistry& toy_registry() {
  static const JobRegistry registry = [] {
    JobRegistry r = JobRegistry::builtin();
    r.add<ToyConfig>("toy_regression", "test kind", &toy_regression_job);
    return r;
  }();
  return registry;
}

}  // namespace atelier::test
