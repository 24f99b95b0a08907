#include "core/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace atelier {
namespace fs = std::filesystem;

RunLock::RunLock(const fs::path& run_dir) {
  fs::create_directories(run_dir);
  const fs::path path = run_dir / ".lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path.string(), ": cannot open the run lock: ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail("run folder ", run_dir.string(), " is in use by process ", n > 0 ? std::string(pid, n) : "?",
           " (a job is running there; wait for it, or pass another --run-dir)");
    fail(path.string(), ": cannot lock: ", std::strerror(err));
  }
  const std::string me = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
    // The lock holds regardless; only the PID in error messages of others would be missing.
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

int remove_stale_temp_files(const fs::path& run_dir) {
  int removed = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(run_dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec) && it->path().filename().string().find(".tmp-") != std::string::npos &&
        fs::remove(it->path(), ec))
      ++removed;
  }
  return removed;
}

}  // namespace atelier
