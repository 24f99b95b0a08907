// `atelier batch` (studio/batch.h): job lists in three forms, sharding across array jobs, skip / resume /
// failure per job, and the CLI's summary and exit codes. Jobs are the test kind toy_regression (tests/toy/)
// with a few steps, a fraction of a second each.
#include <catch2/catch.hpp>

#include <map>

#include "core/atomic_file.h"
#include "studio/batch.h"
#include "tests/helpers.h"
#include "tests/toy/toy_job.h"

using namespace atelier;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kToy = ATELIER_TOY_CLI;

json toy(std::int64_t steps, std::int64_t seed = 0) {
  return {{"kind", "toy_regression"}, {"steps", steps}, {"checkpoint_every", 10}, {"val_every", 1000}, {"seed", seed}};
}

// Writes one JSON document per line.
void write_lines(const fs::path& path, const std::vector<json>& jobs) {
  std::string text;
  for (const auto& j : jobs) text += j.dump() + "\n";
  write_file_atomic(path, text);
}

// Runs the batch in this process; `events` (when given) collects every job's events.
BatchReport run_toy_batch(const BatchList& list, const CancelToken& cancel, std::vector<Event>* events = nullptr,
                          std::function<void(const Event&)> on_event = nullptr) {
  const ReporterFactory make_reporter = [&](const BatchJob&) {
    auto reporter = std::make_unique<Reporter>();
    reporter->add_sink(std::make_shared<CallbackSink>([&](const Event& e) {
      if (events != nullptr) events->push_back(e);
      if (on_event) on_event(e);
    }));
    return reporter;
  };
  return run_batch(JobRunner(test::toy_registry()), list, BatchShard{}, {}, make_reporter, cancel);
}

// The statuses of a report's jobs, by name (what the summary prints).
std::vector<std::string> statuses(const BatchReport& report) {
  std::vector<std::string> out;
  for (const auto& r : report.results) out.push_back(status_name(r.status));
  return out;
}

using Names = std::vector<std::string>;

std::string run_status(const fs::path& run_dir) {
  return load_json_file(run_dir / "status.json")["status"].get<std::string>();
}

}  // namespace

TEST_CASE("Batch shards cover every job exactly once; --shard and SLURM array variables pick the shard", "[batch]") {
  test::TempDir dir("atelier-batch");
  std::vector<json> jobs;
  for (int k = 0; k < 7; ++k) jobs.push_back(toy(4, k));
  write_lines(dir / "jobs.jsonl", jobs);
  const BatchList list = load_batch(dir / "jobs.jsonl");
  REQUIRE(list.jobs.size() == 7);
  for (int n = 1; n <= 4; ++n) {
    std::map<std::size_t, int> runs;
    for (int i = 0; i < n; ++i)
      for (const BatchJob* job : shard_jobs(list, BatchShard{i, n, ""})) {
        CHECK(static_cast<int>(job->index % n) == i);
        ++runs[job->index];
      }
    INFO("n = " << n);
    CHECK(runs.size() == 7);
    for (const auto& [index, count] : runs) CHECK(count == 1);
  }

  CHECK(parse_shard("1/4").index == 1);
  CHECK(parse_shard("1/4").count == 4);
  CHECK(parse_shard("0/1").count == 1);
  for (const char* bad : {"4/4", "-1/2", "1/0", "a/b", "3", "1/2/3", "/2", ""})
    CHECK_THROWS_WITH(parse_shard(bad), Contains(std::string("--shard '") + bad + "'") && Contains("0 <= i < n"));

  std::map<std::string, std::string> env;
  const auto lookup = [&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  CHECK_FALSE(slurm_shard(lookup).has_value());
  env["SLURM_ARRAY_TASK_ID"] = "2";
  CHECK_FALSE(slurm_shard(lookup).has_value());  // both variables or none
  env["SLURM_ARRAY_TASK_COUNT"] = "4";
  CHECK(slurm_shard(lookup)->index == 2);
  CHECK(slurm_shard(lookup)->count == 4);
  env["SLURM_ARRAY_TASK_ID"] = "5";  // --array=4-7: the index is ID - MIN
  env["SLURM_ARRAY_TASK_MIN"] = "4";
  CHECK(slurm_shard(lookup)->index == 1);
  CHECK_THAT(slurm_shard(lookup)->origin, Contains("SLURM_ARRAY_TASK_ID 5"));
  env["SLURM_ARRAY_TASK_ID"] = "9";  // --array=4,9,12: not an evenly spaced range of 4
  CHECK_THROWS_WITH(slurm_shard(lookup), Contains("SLURM_ARRAY_TASK_ID 9") && Contains("--shard i/n"));
  env["SLURM_ARRAY_TASK_ID"] = "x";
  CHECK_THROWS_WITH(slurm_shard(lookup), Contains("SLURM_ARRAY_TASK_ID='x' is not an integer"));
}

TEST_CASE("Batch files: a JSON array, JSON lines and a folder give the same jobs and run folders", "[batch]") {
  test::TempDir dir("atelier-batch");
  fs::create_directories(dir / "list/jobs");
  write_file_atomic(dir / "list/jobs/a.json", toy(4, 1).dump());
  write_file_atomic(dir / "list/jobs/b.json", toy(4, 2).dump());
  json inline_job = toy(4, 3);
  inline_job["run_dir"] = (dir / "mine").string();

  // Array: inline documents and paths relative to the batch file's folder.
  write_file_atomic(dir / "list/jobs.json", json::array({"jobs/a.json", inline_job, "jobs/b.json"}).dump(2));
  const BatchList array = load_batch(dir / "list/jobs.json");
  REQUIRE(array.jobs.size() == 3);
  CHECK(array.jobs[0].name == "000-a");
  CHECK(array.jobs[0].run_dir == fs::path("runs/batch-jobs/000-a"));
  CHECK(array.jobs[0].job == toy(4, 1));
  CHECK(array.jobs[1].name == "001-toy_regression");
  CHECK(array.jobs[1].run_dir == dir / "mine");
  CHECK(array.jobs[1].job == toy(4, 3));  // "run_dir" taken out before validation
  CHECK(array.jobs[2].run_dir == fs::path("runs/batch-jobs/002-b"));

  // JSON lines: blank lines and # comments skipped; --runs-dir moves the default run folders.
  write_file_atomic(dir / "list/jobs.jsonl",
                    "# three jobs\n\"jobs/a.json\"\n\n" + inline_job.dump() + "\n   # the last one\n\"jobs/b.json\"\n");
  const BatchList lines = load_batch(dir / "list/jobs.jsonl", dir / "runs");
  REQUIRE(lines.jobs.size() == 3);
  for (std::size_t k = 0; k < 3; ++k) {
    CHECK(lines.jobs[k].name == array.jobs[k].name);
    CHECK(lines.jobs[k].job == array.jobs[k].job);
  }
  CHECK(lines.jobs[0].run_dir == dir / "runs/000-a");
  CHECK(lines.jobs[1].source == (dir / "list/jobs.jsonl").string() + " line 4");

  // A folder: its *.json files sorted by name, other files ignored.
  write_file_atomic(dir / "list/jobs/notes.txt", "not a job");
  const BatchList folder = load_batch(dir / "list/jobs/");
  REQUIRE(folder.jobs.size() == 2);
  CHECK(folder.jobs[0].name == "000-a");
  CHECK(folder.jobs[1].name == "001-b");
  CHECK(folder.jobs[1].run_dir == fs::path("runs/batch-jobs/001-b"));
  CHECK(folder.jobs[1].job == toy(4, 2));

  // The shipped example validates.
  const BatchList shipped = load_batch(test::source_path("assets/jobs/samplers.jsonl"));
  REQUIRE(shipped.jobs.size() == 2);
  for (const auto& job : shipped.jobs) CHECK(plan_job(JobRunner(), job, {}).note.empty());

  // Eleven hundred jobs: indices padded to four digits, the same width for every shard.
  write_lines(dir / "many.jsonl", std::vector<json>(1100, toy(4)));
  const BatchList many = load_batch(dir / "many.jsonl");
  CHECK(many.jobs[7].name == "0007-toy_regression");
  CHECK(many.jobs[1099].name == "1099-toy_regression");
}

TEST_CASE("Malformed batch files: one error naming the file and the line or entry", "[batch][cli]") {
  test::TempDir dir("atelier-batch");
  const auto error_of = [&](const std::string& name, const std::string& text) -> std::string {
    write_file_atomic(dir / name, text);
    try {
      load_batch(dir / name);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  const std::string lines = (dir / "jobs.jsonl").string();
  const std::string good = toy(4).dump();
  CHECK_THAT(error_of("jobs.jsonl", good + "\n# ok\n{\"kind\": \"toy_regression\",\n"),
             Contains(lines + " line 3: invalid JSON"));
  CHECK_THAT(error_of("jobs.jsonl", good + "\n42\n"),
             Contains(lines + " line 2: expected a job object") && Contains("got number"));
  CHECK_THAT(error_of("jobs.jsonl", "# nothing\n\n"), Contains(lines + ": no jobs"));
  json with_dir = toy(4);
  with_dir["run_dir"] = 3;
  CHECK_THAT(error_of("jobs.jsonl", with_dir.dump()), Contains(lines + " line 1: \"run_dir\" must be a folder name"));
  with_dir["run_dir"] = "runs/same";
  CHECK_THAT(error_of("jobs.jsonl", with_dir.dump() + "\n" + with_dir.dump()),
             Contains(lines + " line 2: run folder runs/same is also the run folder of " + lines + " line 1"));

  const std::string array = (dir / "jobs.json").string();
  CHECK_THAT(error_of("jobs.json", "[" + good + ", true]"), Contains(array + " entry 1: expected a job object"));
  CHECK_THAT(error_of("jobs.json", good), Contains(array + ": expected a JSON array of jobs, got object"));
  CHECK_THAT(error_of("jobs.json", "[" + good + ",]"), Contains(array + ": invalid JSON") && Contains("line 1"));
  CHECK_THROWS_WITH(load_batch(dir / "nope.jsonl"), Contains("nope.jsonl: cannot open: no such file"));

  // The CLI: one line on stderr and exit 1, nothing run.
  write_file_atomic(dir / "bad.jsonl", good + "\n\n{oops}\n");
  const auto r = test::run_cli("batch " + (dir / "bad.jsonl").string(), kToy);
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Contains("atelier: error: " + (dir / "bad.jsonl").string() + " line 3: invalid JSON"));
  write_file_atomic(dir / "jobs.json", "[" + good + "]");
  const auto s = test::run_cli("batch " + (dir / "jobs.json").string() + " --shard 4/4", kToy);
  CHECK(s.exit_code == 1);
  CHECK_THAT(s.output, Contains("--shard '4/4'"));
}

TEST_CASE("atelier batch: a failing job is reported and the others run; a second run skips what is done",
          "[batch][cli]") {
  test::TempDir dir("atelier-batch");
  json bad_value = toy(4);
  bad_value["steps"] = 0;
  write_file_atomic(dir / "missing_model.json",
                    json{{"kind", "sample"}, {"model", (dir / "missing.safetensors").string()}}.dump());
  write_lines(dir / "jobs.jsonl", {toy(4), bad_value, toy(4, 1), "missing_model.json"});
  const std::string batch = "batch -q " + (dir / "jobs.jsonl").string() + " --runs-dir " + (dir / "runs").string();
  const fs::path runs = dir / "runs";

  auto first = test::run_cli(batch, kToy);
  INFO(first.output);
  CHECK(first.exit_code == 1);
  CHECK(run_status(runs / "000-toy_regression") == "completed");
  CHECK(run_status(runs / "002-toy_regression") == "completed");
  CHECK(fs::exists(runs / "002-toy_regression/toy.safetensors"));
  CHECK_FALSE(fs::exists(runs / "001-toy_regression"));  // an invalid document never touches its folder
  // The summary: a row per job with its status, the error's first line for failures, then the counts.
  CHECK_THAT(first.output, Contains("index") && Contains("run folder") && Contains("seconds"));
  CHECK_THAT(first.output,
             Contains("001-toy_regression") && Contains("failed") && Contains("jobs.jsonl line 2: field 'steps'"));
  CHECK_THAT(first.output, Contains("003-missing_model") && Contains("missing.safetensors"));
  CHECK_THAT(first.output, Contains("4 jobs: 2 completed, 2 failed"));

  auto second = test::run_cli(batch, kToy);
  INFO(second.output);
  CHECK(second.exit_code == 1);  // the two bad jobs still fail
  CHECK_THAT(second.output, Contains("4 jobs: 2 skipped (already done), 2 failed"));

  // Shards: 0/2 holds jobs 0 and 2 (both done); SLURM variables select shard 1/2 (jobs 1 and 3, both bad).
  auto shard0 = test::run_cli(batch + " --shard 0/2", kToy);
  INFO(shard0.output);
  CHECK(shard0.exit_code == 0);
  CHECK_THAT(shard0.output, Contains("shard 0/2 (--shard 0/2): 2 of 4 jobs: 2 skipped (already done)"));
  auto shard1 = test::run_cli(batch, "SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 " + kToy);
  INFO(shard1.output);
  CHECK(shard1.exit_code == 1);
  CHECK_THAT(shard1.output, Contains("shard 1/2 (SLURM_ARRAY_TASK_ID 1): 2 of 4 jobs: 2 failed"));

  // --dry-run plans without running; a changed config is an error, never an overwrite.
  auto plan = test::run_cli(batch + " --dry-run --set steps=5", kToy);
  INFO(plan.output);
  CHECK(plan.exit_code == 1);
  CHECK_THAT(plan.output, Contains("000-toy_regression") && Contains("holds a run of another config ('steps' is 5 "
                                                                     "here but 4 in"));
  CHECK_THAT(plan.output, Contains("remove the folder"));
  CHECK_THAT(plan.output, Contains("001-toy_regression") && Contains(" run\n"));
  CHECK_THAT(plan.output, Contains("dry run: nothing was run"));
  CHECK_FALSE(fs::exists(runs / "001-toy_regression"));
  CHECK(load_json_file(runs / "000-toy_regression/config.json")["steps"] == 4);
  auto plan_done = test::run_cli(batch + " --dry-run --shard 0/2", kToy);
  CHECK(plan_done.exit_code == 0);
  CHECK_THAT(plan_done.output, Contains("skip (already done)"));
}

TEST_CASE("Batch: a cancelled job ends the batch; the next run resumes it from its checkpoint", "[batch]") {
  test::TempDir dir("atelier-batch");
  json slow = toy(40);
  write_lines(dir / "jobs.jsonl", {slow, toy(4, 1)});
  const BatchList list = load_batch(dir / "jobs.jsonl", dir / "runs");
  const fs::path run = dir / "runs/000-toy_regression";

  // Ctrl-C at step 17: the job checkpoints and stops; the second job is left for the next run.
  CancelToken cancel;
  const auto stop_at_17 = [&](const Event& e) {
    if (e.type == Event::Type::Progress && e.phase == "train" && e.step == 17) cancel.request();
  };
  const BatchReport cut = run_toy_batch(list, cancel, nullptr, stop_at_17);
  CHECK(statuses(cut) == Names{"cancelled", "not run"});
  CHECK(run_status(run) == "cancelled");
  CHECK(fs::exists(run / "checkpoints/step_00000017.safetensors"));
  CHECK_FALSE(fs::exists(dir / "runs/001-toy_regression"));
  CHECK_THAT(summary_table(cut), Contains("cancelled") && Contains("not run"));

  const JobRunner runner(test::toy_registry());
  const PlannedJob planned = plan_job(runner, list.jobs[0], {});
  CHECK((planned.action == PlannedJob::Action::Resume));
  CHECK(planned.note == "from its last checkpoint");

  cancel.reset();
  std::vector<Event> events;
  const BatchReport resumed = run_toy_batch(list, cancel, &events);
  CHECK(statuses(resumed) == Names{"resumed", "completed"});
  CHECK(std::any_of(events.begin(), events.end(), [](const Event& e) { return e.message == "resumed from step 17"; }));
  CHECK(run_status(run) == "completed");
  CHECK(fs::exists(run / "toy.safetensors"));
  CHECK(statuses(run_toy_batch(list, cancel)) == Names{"skipped (already done)", "skipped (already done)"});

  // A run that failed before its first checkpoint runs again from the start in its folder.
  fs::remove_all(run / "checkpoints");
  write_file_atomic(run / "status.json", json{{"status", "failed"}, {"error", "out of memory"}}.dump());
  CHECK(plan_job(runner, list.jobs[0], {}).note == "from the start (no checkpoint yet)");
  CHECK(statuses(run_toy_batch(list, cancel)) == Names{"resumed", "skipped (already done)"});
  CHECK(run_status(run) == "completed");
}

TEST_CASE("atelier batch: Ctrl-C cancels the current job, exits 130 and leaves the rest for the next run",
          "[batch][cli]") {
  test::TempDir dir("atelier-batch");
  json slow = toy(400);
  slow["step_delay_ms"] = 20;  // 8 s in all: the interrupt lands while it trains
  write_lines(dir / "jobs.jsonl", {slow, toy(4, 1)});
  const fs::path runs = dir / "runs", status = runs / "000-toy_regression/status.json";
  // SIGINT once the first job has started (its status.json exists), as Ctrl-C would.
  const std::string batch = "batch -q " + (dir / "jobs.jsonl").string() + " --runs-dir " + runs.string();
  auto r = test::run_cli(batch + " 2>&1 & pid=$!; for i in $(seq 400); do [ -s " + status.string() +
                             " ] && break; sleep 0.05; done; kill -INT $pid; wait $pid",
                         kToy);
  INFO(r.output);
  CHECK(r.exit_code == 130);
  CHECK_THAT(r.output, Contains("cancelled") && Contains("not run"));
  CHECK(run_status(runs / "000-toy_regression") == "cancelled");
  CHECK_FALSE(fs::exists(runs / "001-toy_regression"));
  auto plan = test::run_cli(batch + " --dry-run", kToy);
  INFO(plan.output);
  CHECK(plan.exit_code == 0);
  CHECK_THAT(plan.output, Contains("000-toy_regression") && Contains("resume from its last checkpoint"));
  CHECK_THAT(plan.output, Contains("001-toy_regression") && Contains(" run\n"));
}
