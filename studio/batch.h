// Batches: a list of jobs run one after another (`atelier batch`), shardable across a cluster's array jobs.
//
// A batch file is one of
//   - a JSON array (any extension but .jsonl) whose entries are job documents ({"kind": ..., fields}, what
//     `atelier run` takes) or paths of job files, relative to the batch file's folder;
//   - JSON lines (.jsonl): one entry per line; blank lines and lines starting with # are skipped;
//   - a folder: its *.json files, sorted by name.
// Jobs are numbered from 0 in list order (an array's entry k is job k). An inline entry may carry
// "run_dir" (taken out before validation; relative to the current folder, like --run-dir); otherwise job
// k runs in <runs_dir>/<kkk>-<name>, with runs_dir runs/batch-<batch file stem> unless given, kkk the
// zero-padded index and name the job file's stem or the kind, so every shard names every job the same way.
//
// Sharding: job k belongs to shard k mod n of n (BatchShard{i, n}, 0-based i). Array tasks of one batch file
// share the list without overlap; jobs are independent, so one shard never waits on another.
//
// Each job of a shard is planned against its run folder just before it runs:
//   run     the folder holds no run (no config.json): a fresh run
//   skip    status.json says "completed" and config.json equals the effective config the job has now
//   resume  any other status (running, cancelled, failed: an interrupted run) with that same config:
//           continues from checkpoints/, or runs again from the start in the folder when the job had not
//           written a checkpoint yet
//   invalid the document does not validate, or the folder holds a run of another config: an error (a run
//           is never overwritten; remove the folder or give the job another run_dir)
// A job that fails is reported and the others still run; a cancelled job (Ctrl-C) ends the batch.
#pragma once
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/report.h"
#include "studio/runner.h"

namespace atelier {

inline constexpr std::size_t kMaxBatchFileBytes = 16 << 20;  // a batch file (JSON array or JSON lines)

struct BatchJob {
  std::size_t index = 0;          // position in the whole list, from 0
  std::string name;               // "<index>-<job file stem or kind>": the default run folder's name
  std::string entry;              // where the entry is: "jobs.jsonl line 3", "jobs.json entry 2", a file
  std::string source;             // where the document is, for its errors: `entry`, or the job file
  json job;                       // the job document, "run_dir" taken out
  std::filesystem::path run_dir;  // explicit "run_dir" or <runs_dir>/<name>
  std::string error;              // a job file that could not be read: the job fails with this
};

struct BatchList {
  std::filesystem::path file;
  std::vector<BatchJob> jobs;
};

// Reads a batch file or folder (layout above). Error naming the file and the entry ("jobs.jsonl line 3:
// invalid JSON ...") when the list itself is malformed: bad JSON, an entry that is neither a job object
// nor a path, no jobs at all, two jobs sharing a run folder. A job file that cannot be read fails only its
// job (BatchJob::error). Empty `runs_dir`: runs/batch-<stem of the file or folder>.
BatchList load_batch(const std::filesystem::path& path, const std::filesystem::path& runs_dir = {});

// Shard `index` of `count` of a batch (0 <= index < count); `origin` says where it came from, for the summary.
// (Not core/job.h's Shard: that one splits a data-parallel global batch across ranks.)
struct BatchShard {
  int index = 0;
  int count = 1;
  std::string origin;
  bool owns(std::size_t job) const { return job % static_cast<std::size_t>(count) == static_cast<std::size_t>(index); }
};

// "i/n" (--shard) as a BatchShard; Error naming the value unless 0 <= i < n.
BatchShard parse_shard(const std::string& text);
// The shard of a SLURM array task when both SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are set
// (`env` looks a variable up, nullptr when unset): index (ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP
// of COUNT, so --array=0-3 and --array=1-4 both give shards 0..3. Error naming the variables when the
// index falls outside 0..COUNT-1 (an --array list such as 0,5,9).
std::optional<BatchShard> slurm_shard(const std::function<const char*(const char*)>& env);

// The jobs of `shard`, in list order.
std::vector<const BatchJob*> shard_jobs(const BatchList& list, const BatchShard& shard);

struct PlannedJob {
  enum class Action { Run, Skip, Resume, Invalid };
  const BatchJob* job = nullptr;
  Action action = Action::Invalid;
  PreparedRun prepared;  // Run, Resume
  std::string note;      // Invalid: the error; Resume: from a checkpoint or from the start
};

// Plans one job (overrides: "key=value" applied to its document, as `atelier run --set`). Never throws:
// a job that cannot run is Invalid with the error.
PlannedJob plan_job(const JobRunner& runner, const BatchJob& job, const std::vector<std::string>& overrides);

struct BatchResult {
  enum class Status { Completed, Skipped, Resumed, Failed, Cancelled, NotRun };
  std::size_t index = 0;
  std::string name;
  std::filesystem::path run_dir;
  Status status = Status::NotRun;
  double seconds = 0;
  std::string error;  // Failed: the whole message
};

const char* status_name(BatchResult::Status s);

struct BatchReport {
  BatchShard shard;
  std::size_t total = 0;  // jobs in the whole list
  std::vector<BatchResult> results;
  bool any(BatchResult::Status s) const;
};

// Makes the Reporter a job reports to (the CLI's terminal; the runner adds the run folder's log itself).
using ReporterFactory = std::function<std::unique_ptr<Reporter>(const BatchJob&)>;

// Plans and runs the jobs of `shard` one after another. Failures are results, never exceptions; after a
// cancelled job (or a cancel between jobs) the remaining jobs are NotRun.
BatchReport run_batch(const JobRunner& runner, const BatchList& list, const BatchShard& shard,
                      const std::vector<std::string>& overrides, const ReporterFactory& make_reporter,
                      const CancelToken& cancel);

// The summary `atelier batch` prints: one row per job (index, job, run folder, status, seconds, the
// error's first line), then the counts and the shard.
std::string summary_table(const BatchReport& report);
// The plan of --dry-run: one row per job of the shard with what a run would do.
std::string plan_table(const std::vector<PlannedJob>& plan, const BatchShard& shard, std::size_t total);

}  // namespace atelier
