#include "tests/helpers.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

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

}  // namespace atelier::test
