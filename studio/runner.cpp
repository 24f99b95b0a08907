#include "studio/runner.h"

#include <torch/torch.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/run_lock.h"
#include "core/runtime.h"
#include "studio/model_ops.h"
#include "studio/workspace.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {

// JSON text of a run-folder file; strings that are not UTF-8 (paths are bytes) are replaced, not fatal.
std::string dump_text(const json& j) {
  return json_text(j, 2) + "\n";
}

// The job document with the request's overrides applied (before the kind is read: --set kind=... picks
// another); `overridden` receives the keys they set.
json overridden_job(const RunRequest& request, std::vector<std::string>& overridden) {
  if (!request.job.is_object()) fail("a job must be a JSON object");
  json job = request.job;
  for (const auto& o : request.overrides) {
    apply_override(job, o);
    overridden.push_back(o.substr(0, o.find('=')));
  }
  return job;
}

const JobKind& kind_of(const JobRegistry& registry, const json& job) {
  auto kind_it = job.find("kind");
  if (kind_it == job.end()) fail("missing key 'kind'");
  if (!kind_it->is_string()) fail("key 'kind' must be a string");
  return registry.get(kind_it->get<std::string>());
}

// The run of `job` (overrides applied) as a job of `kind`: its effective config ("kind" and every field,
// input paths resolved so shipped models are found wherever Atelier is installed) and its run folder.
PreparedRun configured(const JobKind& kind, const json& job, const RunRequest& request) {
  PreparedRun p;
  p.kind = &kind;
  p.run_dir = request.run_dir.empty() ? JobRunner::default_run_dir(request) : request.run_dir;
  p.resume = request.resume;
  json effective = kind.normalize(job);
  resolve_input_paths(kind.fields, effective);
  p.effective = json{{"kind", kind.name}};
  p.effective.update(effective);
  return p;
}

}  // namespace

const char* status_name(RunResult::Status s) {
  switch (s) {
    case RunResult::Status::Completed: return "completed";
    case RunResult::Status::Cancelled: return "cancelled";
    case RunResult::Status::Failed: return "failed";
  }
  return "failed";
}

RunRequest load_job_file(const fs::path& path) {
  RunRequest r;
  r.job = load_json_file(path);
  r.source = path.string();
  return r;
}

fs::path JobRunner::default_run_dir(const RunRequest& request) {
  fs::path src(request.source);
  std::string stem = src.has_extension() ? src.stem().string() : request.job.value("kind", std::string("job"));
  return fs::path("runs") / stem;
}

PreparedRun JobRunner::configure(const RunRequest& request) const {
  return with_context(
      [&] {
        std::vector<std::string> overridden;
        const json job = overridden_job(request, overridden);
        return configured(kind_of(registry_, job), job, request);
      },
      request.source);
}

PreparedRun JobRunner::prepare(const RunRequest& request) const {
  return with_context(
      [&] {
        std::vector<std::string> overridden;
        const json job = overridden_job(request, overridden);
        const JobKind& kind = kind_of(registry_, job);
        const fs::path run_dir = request.run_dir.empty() ? default_run_dir(request) : request.run_dir;
        const fs::path saved_path = run_dir / "config.json";
        json saved;
        if (request.resume) {
          if (!fs::exists(saved_path))
            fail("--resume: ", run_dir.string(), " holds no run (", saved_path.string(), " missing)");
          saved = load_json_file(saved_path);
          if (saved.value("kind", kind.name) != kind.name)
            fail("--resume: the job is a '", kind.name, "' job but ", saved_path.string(), " holds a '",
                 saved["kind"].get<std::string>(), "' run");
          saved.erase("kind");
        }
        PreparedRun p = configured(kind, job, request);
        if (request.resume) {
          for (const auto& [key, value] : p.effective.items()) {
            bool is_override = std::find(overridden.begin(), overridden.end(), key) != overridden.end();
            if (!is_override && saved.contains(key) && saved[key] != value)
              fail("--resume: '", key, "' is ", json_text(value), " here but ", json_text(saved[key]), " in ",
                   saved_path.string(), " (change it with --set ", key, "=... to override)");
          }
        } else if (request.rank == 0 && fs::exists(saved_path)) {
          fail("run folder ", run_dir.string(), " already holds a run: pass --resume to continue it or --run-dir ",
               "to start a new one");
        }
        return p;
      },
      request.source);
}

namespace {

// The job, its errors as the result (Completed, Cancelled or Failed with the message). The ranks of a
// data-parallel run meet first: a rank that failed its checks or its run-folder set-up has exited, and the
// others hear it here at once rather than at the job's first collective, minutes later.
void run_kind(const PreparedRun& p, JobContext& ctx, RunResult& result) {
  try {
    if (p.parallel != nullptr) p.parallel->barrier();
    p.kind->run(p.effective, ctx);
    result.status = RunResult::Status::Completed;
  } catch (const Cancelled&) {
    result.status = RunResult::Status::Cancelled;
  } catch (const c10::Error& e) {
    result.error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    result.error = e.what();
  }
}

void join_group(const PreparedRun& p, JobContext& ctx) {
  if (p.parallel == nullptr) return;
  ctx.parallel = p.parallel;
  ctx.shard = p.parallel->shard();
}

}  // namespace

// A rank > 0 of a data-parallel run: the same job in rank 0's run folder (it reads the checkpoints rank 0
// writes), its own files in a scratch folder removed at the end; errors reported, nothing else.
RunResult JobRunner::run_secondary(const PreparedRun& p, Reporter& reporter, const CancelToken& cancel) const {
  RunResult result;
  result.run_dir = p.run_dir;
  const fs::path scratch = fs::temp_directory_path() /
                           ("atelier-rank" + std::to_string(p.parallel->rank()) + "-" + std::to_string(::getpid()));
  JobContext ctx{p.run_dir, p.resume, reporter, cancel, configure_threads(p.threads), nullptr, {}, {}};
  join_group(p, ctx);
  ctx.output_dir = scratch;
  try {
    check_job_inputs(*p.kind, p.effective);
    fs::create_directories(scratch);
    run_kind(p, ctx, result);
  } catch (const std::exception& e) {
    result.error = e.what();
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);
  if (result.status == RunResult::Status::Failed) reporter.error(result.error);
  return result;
}

RunResult JobRunner::run(const PreparedRun& p, Reporter& reporter, const CancelToken& cancel) const {
  if (p.parallel != nullptr && p.parallel->rank() > 0) return run_secondary(p, reporter, cancel);
  RunResult result;
  result.run_dir = p.run_dir;
  auto write_status = [&](const char* status, const std::string& error) {
    json s = {{"status", status}};
    if (!error.empty()) s["error"] = error;
    write_file_atomic(p.run_dir / "status.json", dump_text(s));
  };
  std::optional<RunLock> lock;  // held until the job has ended and its status is written
  try {
    check_job_inputs(*p.kind, p.effective);  // before the run folder is touched
    lock.emplace(p.run_dir);
    if (!p.resume && fs::exists(p.run_dir / "config.json"))  // another process started a run here meanwhile
      fail("run folder ", p.run_dir.string(), " already holds a run: pass --resume to continue it");
    const int stale = p.resume ? remove_stale_temp_files(p.run_dir) : 0;
    write_file_atomic(p.run_dir / "config.json", dump_text(p.effective));
    reporter.add_sink(std::make_shared<JsonlSink>(p.run_dir / "log.jsonl"));
    write_status("running", "");
    if (stale > 0) reporter.info("removed " + std::to_string(stale) + " temporary file(s) of an interrupted write");
  } catch (const std::exception& e) {
    result.error = e.what();
    reporter.error(result.error);
    return result;
  }
  JobContext ctx{p.run_dir, p.resume, reporter, cancel, configure_threads(p.threads), nullptr, {}, {}};
  join_group(p, ctx);
  reporter.info(std::string(p.resume ? "resuming " : "starting ") + p.kind->name + " in " + p.run_dir.string() + " (" +
                std::to_string(ctx.threads) + " threads" +
                (p.parallel != nullptr ? ", data-parallel rank 0 of " + std::to_string(p.parallel->world()) : "") +
                ")");
  run_kind(p, ctx, result);
  if (result.status == RunResult::Status::Cancelled)
    reporter.warn("cancelled; continue with --resume (run folder " + p.run_dir.string() + ")");
  else if (result.status == RunResult::Status::Failed)
    reporter.error(result.error);
  else
    reporter.info("completed: " + p.run_dir.string());
  try {
    write_status(status_name(result.status), result.error);
  } catch (const std::exception& e) {
    reporter.error(e.what());
  }
  return result;
}

}  // namespace atelier
