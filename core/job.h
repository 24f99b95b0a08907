// What a running job sees: its run folder, whether it resumes, where to report, and the cancel flag.
// Jobs call check_cancel() between steps; cancellation unwinds as Cancelled after the job has had the
// chance to write a checkpoint (core/train_loop.h does both for training jobs).
#pragma once
#include <atomic>
#include <cstdint>
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

class ProcessGroup;  // core/distributed.h

// This process's part of every global batch in a data-parallel run: rank r of `world` takes rows
// [r * batch / world, (r + 1) * batch / world). One process: everything.
struct Shard {
  int rank = 0, world = 1;
  std::int64_t size(std::int64_t batch) const { return batch / world; }
  std::int64_t first(std::int64_t batch) const { return rank * (batch / world); }
  bool main() const { return rank == 0; }
};

struct JobContext {
  std::filesystem::path run_dir;
  bool resume = false;
  Reporter& report;
  const CancelToken& cancel;
  int threads = 0;  // LibTorch intra-op threads in use
  // Data-parallel runs (core/distributed.h): the process group (null for one process) and this rank's
  // shard; ranks other than 0 write what a job writes with path() into `output_dir` (scratch), so the run
  // folder holds rank 0's files alone.
  ProcessGroup* parallel = nullptr;
  Shard shard;
  std::filesystem::path output_dir;

  void check_cancel() const {
    if (cancel.requested()) throw Cancelled();
  }
  std::filesystem::path path(const std::string& name) const {
    return (output_dir.empty() ? run_dir : output_dir) / name;
  }
};

}  // namespace atelier
