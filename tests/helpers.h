// Shared test utilities: scratch folders, running the CLI, comparing tensors.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "core/config.h"
#include "diffusion/dit.h"

namespace atelier {
class JobRegistry;
}

namespace atelier::test {

// A fresh, empty folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& name = "atelier-test");
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};
// Runs `<cli> <args>` through the shell (args are passed verbatim); by default the `atelier` CLI.
CommandResult run_cli(const std::string& args, const std::string& cli = ATELIER_CLI);

// Runs a job file with `cli` once uninterrupted and once SIGKILLed as soon as any training checkpoint
// exists, then resumes the killed run: its `output` file must equal the uninterrupted run's bit for bit.
void check_kill_and_resume(const nlohmann::json& job, const std::string& output, const std::string& cli = ATELIER_CLI);

// Writes `job` to <dir>/<name>.json and runs it with `atelier run -q` into <dir>/<name>.
CommandResult run_job_file(const TempDir& dir, const nlohmann::json& job, const std::string& name);

// A tiny DiT config for tests: `hidden` wide, `depth` blocks of 2 heads, patch 2 on `size`x`size`
// inputs with `channels` channels and `classes` classes.
DiTConfig tiny_dit_config(std::int64_t hidden = 32, std::int64_t depth = 2, std::int64_t size = 8,
                          std::int64_t channels = 3, std::int64_t classes = 2);

// A train_base job of two steps on 16x16 circles and squares: a base model in about a second.
nlohmann::json tiny_base_job(std::int64_t seed = 0);

// A tiny Shapes base model trained by tiny_base_job(seed) into <dir>/base<seed>/model.safetensors.
std::filesystem::path tiny_base_model(const TempDir& dir, int seed = 0);
// A four-step `difffit` job (any tuning method) on `base`, to the night style of circles and squares.
nlohmann::json tiny_finetune_job(const std::filesystem::path& base, const std::string& method);

std::filesystem::path source_path(const std::string& relative);
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b);
// The parity tests' measure: max |out - ref| / max(1, max |ref|), reported with the test's messages.
double relative_diff(const torch::Tensor& out, const torch::Tensor& ref);

// The built-in job kinds plus the test-only `toy_regression` (tests/toy/toy_job.h).
const JobRegistry& toy_registry();

}  // namespace atelier::test
