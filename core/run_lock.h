// An advisory lock on a run folder (flock on <run>/.lock), held while a job runs there: a second process
// (or a second job in the studio) on the same folder is refused with the holder's PID. The kernel
// releases the lock when its holder exits in any way, SIGKILL included, so a dead run never leaves a
// stale lock behind: the .lock file that remains is simply unlocked.
#pragma once
#include <filesystem>
#include <string>

namespace atelier {

class RunLock {
 public:
  // Creates the folder if needed and takes the lock; Error naming the folder and the holder's PID when
  // another process (or another open of this folder) holds it.
  explicit RunLock(const std::filesystem::path& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes the temporary files of interrupted atomic writes ("*.tmp-<pid>-<n>") below `run_dir`; call it
// only with the run's lock held. Returns how many were removed.
int remove_stale_temp_files(const std::filesystem::path& run_dir);

}  // namespace atelier
