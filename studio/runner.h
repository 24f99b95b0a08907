// The job runner: validates a job document, prepares its run folder (effective config, JSON-lines log,
// status), runs it with progress and cancellation, and resumes it from its last checkpoint.
//
// Run folder layout:
//   config.json    effective config (every field), written before the job starts
//   log.jsonl      one JSON event per line (progress, logs, artifacts, metrics)
//   status.json    {"status": "running"|"completed"|"cancelled"|"failed", "error": ...}
//   checkpoints/   training state (core/training_state.h); outputs written by the job itself
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/report.h"
#include "studio/job_registry.h"

namespace atelier {

struct RunRequest {
  json job;                            // the job document, with "kind"
  std::string source = "job";          // where it came from (file path), for messages
  std::vector<std::string> overrides;  // "key=value"
  std::filesystem::path run_dir;       // empty: runs/<source file stem, or kind>
  bool resume = false;
  int rank = 0;  // data-parallel rank: ranks > 0 join rank 0's run folder (no check that it is new)
};

struct RunResult {
  enum class Status { Completed, Cancelled, Failed };
  Status status = Status::Failed;
  std::string error;
  std::filesystem::path run_dir;
};

const char* status_name(RunResult::Status s);

struct PreparedRun {
  const JobKind* kind = nullptr;
  json effective;  // with "kind"
  std::filesystem::path run_dir;
  bool resume = false;
  int threads = 0;  // LibTorch intra-op threads (0: all cores)
  // Data-parallel runs (core/distributed.h): rank 0 runs as one process does, with the group; ranks > 0
  // take no run lock, write no config, log or status, and the job's files go to a scratch folder.
  ProcessGroup* parallel = nullptr;
};

class JobRunner {
 public:
  explicit JobRunner(const JobRegistry& registry = JobRegistry::builtin()) : registry_(registry) {}

  // Validates everything a run needs without touching the disk. Throws Error naming the problem.
  PreparedRun prepare(const RunRequest& request) const;
  // The job's effective config and run folder (overrides applied, fields validated), without looking at
  // what the run folder holds; prepare() adds the checks of --resume and of a folder already in use.
  PreparedRun configure(const RunRequest& request) const;
  // Runs a prepared job; errors inside the job become a Failed result with the message logged.
  RunResult run(const PreparedRun& prepared, Reporter& reporter, const CancelToken& cancel) const;

  static std::filesystem::path default_run_dir(const RunRequest& request);

 private:
  RunResult run_secondary(const PreparedRun& prepared, Reporter& reporter, const CancelToken& cancel) const;
  const JobRegistry& registry_;
};

// Loads a job file (JSON) into a RunRequest.
RunRequest load_job_file(const std::filesystem::path& path);

}  // namespace atelier
