// A job running on a worker thread and watched from the UI thread: the GUI's handle on the job runner.
// The worker owns all torch work; the UI thread only calls start/cancel and polls events into a JobView
// once per frame (a short lock around a queue swap, never a wait on the job).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/job.h"
#include "core/report.h"
#include "studio/runner.h"

namespace atelier {

enum class JobState { Idle, Running, Completed, Cancelled, Failed };
const char* job_state_name(JobState s);

// Everything the UI shows about one job, built from its events.
struct JobView {
  JobState state = JobState::Idle;
  std::string kind;
  std::filesystem::path run_dir;
  std::string error;  // Failed: the job's error message (it names the file, key or value)
  std::string phase;
  std::int64_t step = 0, total = 0;
  double it_per_s = 0, eta_s = 0;
  std::vector<std::pair<std::int64_t, float>> loss;        // (step, loss) of every progress event
  std::vector<std::pair<std::int64_t, float>> val_loss;    // (step, val_loss)
  std::map<std::string, std::filesystem::path> artifacts;  // latest path per artifact kind
  int artifact_version = 0;                                // bumps on every artifact event
  std::map<std::string, double> metrics;
  std::vector<Event> events;

  void apply(const Event& e);
};

class JobSession {
 public:
  explicit JobSession(const JobRegistry& registry = JobRegistry::builtin(), int threads = 0);
  ~JobSession();  // cancels a running job and waits for it
  JobSession(const JobSession&) = delete;
  JobSession& operator=(const JobSession&) = delete;

  // Validates on the calling thread (throws Error naming the problem: nothing starts) and runs the job on
  // the worker, whose runner checks the job's input files first (a bad input fails the job before its run
  // folder is touched). Refuses while another job runs. Returns what was started (kind, run folder).
  PreparedRun start(const RunRequest& request);
  void cancel();
  bool busy() const;
  // Moves the events that arrived since the last call into `view`.
  void poll(JobView& view);
  // Blocks until the worker is done (tests and shutdown).
  void wait();

 private:
  struct Shared;
  const JobRunner runner_;
  int threads_;
  std::shared_ptr<Shared> shared_;
  std::thread worker_;
};

}  // namespace atelier
