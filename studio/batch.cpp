#include "studio/batch.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <map>

#include "core/atomic_file.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {

// A job's name as part of a folder name: letters, digits, '.', '-' and '_' pass, anything else is '_'.
std::string folder_safe(const std::string& text) {
  std::string out = text.empty() ? "job" : text;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  return out;
}

// The stem a batch names its runs after: "jobs.jsonl" -> "jobs", "jobs/" -> "jobs".
std::string batch_stem(const fs::path& path) {
  const fs::path p = path.filename().empty() ? path.parent_path() : path;
  return fs::is_directory(p) ? p.filename().string() : p.stem().string();
}

// A batch file's text: a regular file within kMaxBatchFileBytes.
std::string read_batch_text(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    fail(path.string(), fs::exists(path, ec) ? ": not a regular file or folder" : ": cannot open: no such file");
  if (const auto size = fs::file_size(path, ec); !ec && size > kMaxBatchFileBytes)
    fail(path.string(), ": ", size, " bytes, more than the limit of ", kMaxBatchFileBytes, " bytes for a batch file");
  return read_file(path);
}

// An entry naming a job file: read now; a file that cannot be read fails its job, not the batch.
BatchJob file_job(const fs::path& file, const std::string& entry) {
  BatchJob job;
  job.entry = entry;
  job.source = file.string();
  job.name = file.stem().string();
  try {
    job.job = load_json_file(file);
  } catch (const Error& e) {
    job.error = entry == job.source ? e.what() : entry + ": " + e.what();
  }
  return job;
}

// An entry of an array or a line of JSON lines: a job object (with an optional "run_dir") or the path of a
// job file relative to `base`, the batch file's folder.
BatchJob entry_job(const json& value, const std::string& entry, const fs::path& base) {
  if (value.is_string()) return file_job(base / value.get<std::string>(), entry);
  if (!value.is_object())
    fail(entry, ": expected a job object ({\"kind\": ...}) or the path of a job file, got ", value.type_name());
  BatchJob job;
  job.entry = entry;
  job.source = entry;
  job.job = value;
  if (const auto it = job.job.find("run_dir"); it != job.job.end()) {
    if (!it->is_string() || it->get<std::string>().empty()) fail(entry, ": \"run_dir\" must be a folder name");
    job.run_dir = it->get<std::string>();
    job.job.erase(it);
  }
  const auto kind = job.job.find("kind");
  job.name = kind != job.job.end() && kind->is_string() ? kind->get<std::string>() : "job";
  return job;
}

std::vector<BatchJob> json_lines_jobs(const fs::path& path) {
  const std::string text = read_batch_text(path);
  std::vector<BatchJob> jobs;
  std::size_t begin = 0;
  for (int line = 1; begin < text.size(); ++line) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string_view content(text.data() + begin, end - begin);
    begin = end + 1;
    const auto first = content.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || content[first] == '#') continue;
    const std::string where = path.string() + " line " + std::to_string(line);
    jobs.push_back(entry_job(parse_json(content, where, kMaxJobFileBytes), where, path.parent_path()));
  }
  return jobs;
}

std::vector<BatchJob> json_array_jobs(const fs::path& path) {
  const json entries = parse_json(read_batch_text(path), path.string(), kMaxBatchFileBytes);
  if (!entries.is_array())
    fail(path.string(), ": expected a JSON array of jobs, got ", entries.type_name(),
         " (one job file runs with `atelier run`; JSON lines need the .jsonl extension)");
  std::vector<BatchJob> jobs;
  for (std::size_t k = 0; k < entries.size(); ++k)
    jobs.push_back(entry_job(entries[k], path.string() + " entry " + std::to_string(k), path.parent_path()));
  return jobs;
}

std::vector<BatchJob> folder_jobs(const fs::path& path) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<BatchJob> jobs;
  for (const auto& f : files) jobs.push_back(file_job(f, f.string()));
  return jobs;
}

// The status a run folder's status.json gives ("" when it has none).
std::string run_status(const fs::path& run_dir) {
  const fs::path path = run_dir / "status.json";
  if (!fs::exists(path)) return "";
  const json s = load_json_file(path);
  return s.is_object() && s.contains("status") && s["status"].is_string() ? s["status"].get<std::string>() : "";
}

// The first key on which the config a job has now and the one its run folder holds differ.
std::string first_difference(const json& now, const json& saved, const fs::path& saved_path) {
  for (const auto& [key, value] : now.items())
    if (!saved.is_object() || !saved.contains(key) || saved.at(key) != value)
      return "'" + key + "' is " + json_text(value) + " here but " +
             (saved.is_object() && saved.contains(key) ? json_text(saved.at(key)) : "absent") + " in " +
             saved_path.string();
  for (const auto& [key, value] : saved.items())
    if (!now.contains(key)) return "'" + key + "' is in " + saved_path.string() + " but not in the job";
  return "";
}

void run_planned(const JobRunner& runner, const PlannedJob& plan, Reporter& reporter, const CancelToken& cancel,
                 BatchResult& result) {
  using Status = BatchResult::Status;
  switch (plan.action) {
    case PlannedJob::Action::Invalid:
      result.status = Status::Failed;
      result.error = plan.note;
      reporter.error(plan.note);
      return;
    case PlannedJob::Action::Skip:
      result.status = Status::Skipped;
      reporter.info("skipped: " + plan.job->run_dir.string() + " holds this job's completed run");
      return;
    case PlannedJob::Action::Run:
    case PlannedJob::Action::Resume: break;
  }
  const RunResult r = runner.run(plan.prepared, reporter, cancel);
  switch (r.status) {
    case RunResult::Status::Completed:
      result.status = plan.action == PlannedJob::Action::Resume ? Status::Resumed : Status::Completed;
      break;
    case RunResult::Status::Cancelled: result.status = Status::Cancelled; break;
    case RunResult::Status::Failed:
      result.status = Status::Failed;
      result.error = r.error;
      break;
  }
}

std::string first_line(const std::string& text) {
  return printable(text.substr(0, text.find('\n')), false);
}

// Rows as left-aligned columns two spaces apart (the last column unpadded).
std::string columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], row[c].size());
    }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c)
      line += c + 1 < row.size() ? row[c] + std::string(width[c] - row[c].size() + 2, ' ') : row[c];
    out += line.substr(0, line.find_last_not_of(' ') + 1) + "\n";
  }
  return out;
}

// "shard 1/4 (SLURM_ARRAY_TASK_ID 5): 2 of 7 jobs", or "7 jobs" for the whole list.
std::string shard_line(const BatchShard& shard, std::size_t jobs, std::size_t total) {
  if (shard.count == 1) return std::to_string(total) + " job" + (total == 1 ? "" : "s");
  std::string line = "shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count);
  if (!shard.origin.empty()) line += " (" + shard.origin + ")";
  return line + ": " + std::to_string(jobs) + " of " + std::to_string(total) + " jobs";
}

}  // namespace

BatchList load_batch(const fs::path& path, const fs::path& runs_dir) {
  BatchList list;
  list.file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    list.jobs = folder_jobs(path);
  else if (path.extension() == ".jsonl")
    list.jobs = json_lines_jobs(path);
  else
    list.jobs = json_array_jobs(path);
  if (list.jobs.empty()) fail(path.string(), ": no jobs (a JSON array, JSON lines or a folder of *.json job files)");

  // Names and run folders: <runs_dir>/<index>-<name>, the index zero-padded to the same width for all.
  const fs::path runs = runs_dir.empty() ? fs::path("runs") / ("batch-" + batch_stem(path)) : runs_dir;
  const std::size_t digits = std::max<std::size_t>(3, std::to_string(list.jobs.size() - 1).size());
  std::map<fs::path, const BatchJob*> owner;  // run folder -> the job that runs there
  for (std::size_t k = 0; k < list.jobs.size(); ++k) {
    BatchJob& job = list.jobs[k];
    const std::string index = std::to_string(k);
    job.index = k;
    job.name = std::string(digits - index.size(), '0') + index + "-" + folder_safe(job.name);
    if (job.run_dir.empty()) job.run_dir = runs / job.name;
    const auto [it, fresh] = owner.emplace(job.run_dir.lexically_normal(), &job);
    if (!fresh)
      fail(job.entry, ": run folder ", job.run_dir.string(), " is also the run folder of ", it->second->entry);
  }
  return list;
}

BatchShard parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  auto number = [&](std::size_t from, std::size_t to, int& out) {
    const char* end = text.data() + to;
    auto [ptr, ec] = std::from_chars(text.data() + from, end, out);
    return ec == std::errc() && ptr == end && to > from;
  };
  BatchShard shard;
  if (slash == std::string::npos || !number(0, slash, shard.index) || !number(slash + 1, text.size(), shard.count) ||
      shard.count < 1 || shard.index < 0 || shard.index >= shard.count)
    fail("--shard '", text, "': expected i/n with 0 <= i < n (shard i of n shards, counted from 0; job k runs in ",
         "shard k mod n)");
  shard.origin = "--shard " + text;
  return shard;
}

std::optional<BatchShard> slurm_shard(const std::function<const char*(const char*)>& env) {
  const char* id = env("SLURM_ARRAY_TASK_ID");
  if (id == nullptr || env("SLURM_ARRAY_TASK_COUNT") == nullptr) return std::nullopt;
  auto number = [&](const char* name, const char* fallback) {
    const char* value = env(name);
    const std::string text = value != nullptr ? value : fallback;
    long long out = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec != std::errc() || ptr != text.data() + text.size() || text.empty())
      fail(name, "='", text, "' is not an integer");
    return out;
  };
  const long long task = number("SLURM_ARRAY_TASK_ID", ""), count = number("SLURM_ARRAY_TASK_COUNT", "");
  const long long min = number("SLURM_ARRAY_TASK_MIN", "0"), step = number("SLURM_ARRAY_TASK_STEP", "1");
  const long long offset = task - min;
  if (count < 1 || step < 1 || offset < 0 || offset % step != 0 || offset / step >= count || count > 1 << 30)
    fail("SLURM_ARRAY_TASK_ID ", task, " (SLURM_ARRAY_TASK_MIN ", min, ", SLURM_ARRAY_TASK_STEP ", step,
         ") is not one of SLURM_ARRAY_TASK_COUNT ", count, " evenly spaced array tasks: submit with --array=0-",
         std::max(0LL, count - 1), " or pass --shard i/n");
  return BatchShard{static_cast<int>(offset / step), static_cast<int>(count), std::string("SLURM_ARRAY_TASK_ID ") + id};
}

std::vector<const BatchJob*> shard_jobs(const BatchList& list, const BatchShard& shard) {
  std::vector<const BatchJob*> out;
  for (const auto& job : list.jobs)
    if (shard.owns(job.index)) out.push_back(&job);
  return out;
}

PlannedJob plan_job(const JobRunner& runner, const BatchJob& job, const std::vector<std::string>& overrides) {
  PlannedJob plan;
  plan.job = &job;
  try {
    if (!job.error.empty()) fail(job.error);
    RunRequest request;
    request.job = job.job;
    request.source = job.source;
    request.overrides = overrides;
    request.run_dir = job.run_dir;
    plan.prepared = runner.configure(request);
    const fs::path saved_path = job.run_dir / "config.json";
    if (!fs::exists(saved_path)) {
      plan.action = PlannedJob::Action::Run;
      return plan;
    }
    const json saved = load_json_file(saved_path);
    if (saved != plan.prepared.effective)
      fail(job.source, ": run folder ", job.run_dir.string(), " holds a run of another config (",
           first_difference(plan.prepared.effective, saved, saved_path),
           "): remove the folder to run the job again, or give the job another \"run_dir\"");
    if (run_status(job.run_dir) == "completed") {
      plan.action = PlannedJob::Action::Skip;
      return plan;
    }
    plan.action = PlannedJob::Action::Resume;
    plan.prepared.resume = true;
    plan.note = fs::is_directory(job.run_dir / "checkpoints") ? "from its last checkpoint"
                                                              : "from the start (no checkpoint yet)";
  } catch (const std::exception& e) {
    plan.action = PlannedJob::Action::Invalid;
    plan.note = e.what();
  }
  return plan;
}

const char* status_name(BatchResult::Status s) {
  switch (s) {
    case BatchResult::Status::Completed: return "completed";
    case BatchResult::Status::Skipped: return "skipped (already done)";
    case BatchResult::Status::Resumed: return "resumed";
    case BatchResult::Status::Failed: return "failed";
    case BatchResult::Status::Cancelled: return "cancelled";
    case BatchResult::Status::NotRun: return "not run";
  }
  return "failed";
}

bool BatchReport::any(BatchResult::Status s) const {
  return std::any_of(results.begin(), results.end(), [s](const BatchResult& r) { return r.status == s; });
}

BatchReport run_batch(const JobRunner& runner, const BatchList& list, const BatchShard& shard,
                      const std::vector<std::string>& overrides, const ReporterFactory& make_reporter,
                      const CancelToken& cancel) {
  BatchReport report{shard, list.jobs.size(), {}};
  const std::vector<const BatchJob*> jobs = shard_jobs(list, shard);
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const BatchJob& job = *jobs[i];
    BatchResult& result = report.results.emplace_back();
    result.index = job.index;
    result.name = job.name;
    result.run_dir = job.run_dir;
    if (cancel.requested()) continue;  // Ctrl-C: the rest stays for the next invocation
    const auto start = std::chrono::steady_clock::now();
    try {
      const std::unique_ptr<Reporter> reporter = make_reporter(job);
      reporter->info("batch job " + std::to_string(i + 1) + " of " + std::to_string(jobs.size()) + ": " + job.name);
      run_planned(runner, plan_job(runner, job, overrides), *reporter, cancel, result);
    } catch (const std::exception& e) {  // beyond the runner: a reporter that could not be made, say
      result.status = BatchResult::Status::Failed;
      result.error = e.what();
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return report;
}

std::string summary_table(const BatchReport& report) {
  std::vector<std::vector<std::string>> rows = {{"index", "job", "run folder", "status", "seconds", "error"}};
  std::map<BatchResult::Status, int> counts;
  for (const auto& r : report.results) {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f", r.seconds);
    rows.push_back({std::to_string(r.index), r.name, printable(r.run_dir.string(), false), status_name(r.status),
                    r.status == BatchResult::Status::NotRun ? "" : seconds, first_line(r.error)});
    ++counts[r.status];
  }
  std::string tally;
  for (const auto& [status, n] : counts)
    tally += (tally.empty() ? ": " : ", ") + std::to_string(n) + " " + status_name(status);
  return columns(rows) + shard_line(report.shard, report.results.size(), report.total) + tally + "\n";
}

std::string plan_table(const std::vector<PlannedJob>& plan, const BatchShard& shard, std::size_t total) {
  std::vector<std::vector<std::string>> rows = {{"index", "job", "run folder", "plan"}};
  for (const auto& p : plan) {
    std::string action;
    switch (p.action) {
      case PlannedJob::Action::Run: action = "run"; break;
      case PlannedJob::Action::Skip: action = "skip (already done)"; break;
      case PlannedJob::Action::Resume: action = "resume " + p.note; break;
      case PlannedJob::Action::Invalid: action = "error: " + first_line(p.note); break;
    }
    rows.push_back({std::to_string(p.job->index), p.job->name, printable(p.job->run_dir.string(), false), action});
  }
  return columns(rows) + shard_line(shard, plan.size(), total) + " (dry run: nothing was run)\n";
}

}  // namespace atelier
