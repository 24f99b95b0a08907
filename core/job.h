// What a running job sees: its run folder, whether it resumes, where to report, and the cancel flag.
// Jobs call check_cancel() between steps; cancellation unwinds as Cancelled after the job has had the
// chance to write a checkpoint (core/train_loop.h does both for training jobs).
#pragma once
#include <atomic>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/report.h"

namespace atelier {

class Cancelled : public Error {
 public:
  Cancelled() : Error("cancelled") {}
};

class CancelToken {
 public:
  void request() { flag_.store(true); }
  void reset() { flag_.store(false); }
  bool requested() const { return flag_.load(); }

 private:
  std::atomic<bool> flag_{false};
};

struct JobContext {
  std::filesystem::path run_dir;
  bool resume = false;
  Reporter& report;
  const CancelToken& cancel;
  int threads = 0;  // LibTorch intra-op threads in use

  void check_cancel() const {
    if (cancel.requested()) throw Cancelled();
  }
  std::filesystem::path path(const std::string& name) const { return run_dir / name; }
};

}  // namespace atelier
