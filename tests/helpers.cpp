#include "tests/helpers.h"

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>

#include "core/atomic_file.h"

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

CommandResult run_cli(const std::string& args) {
  CommandResult r;
  std::string cmd = std::string(ATELIER_CLI) + " " + args + " 2>&1";
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

}  // namespace atelier::test
