// Shared test utilities: scratch folders, running the CLI, comparing tensors.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>

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
// Runs `atelier <args>` through the shell (args are passed verbatim).
CommandResult run_cli(const std::string& args);

std::filesystem::path source_path(const std::string& relative);
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace atelier::test
