// `atelier` subcommands. Each returns the process exit code (see cli.cpp for the table).
#pragma once
#include <string>
#include <vector>

#include "core/job.h"

namespace atelier {
class JobRegistry;
}

namespace atelier::cli {

// The whole command line (`atelier run|jobs|inspect|...`) over the job kinds of `registry`.
int main(int argc, char** argv, const JobRegistry& registry);

struct RunArgs {
  std::string job_file;
  std::vector<std::string> overrides;
  std::string run_dir;
  bool resume = false;
  bool quiet = false;
  int nproc = 1;  // > 1: start that many local data-parallel processes (core/distributed.h)
};
// One process, or a rank of a data-parallel run when the environment says so (torchrun, SLURM); with
// nproc > 1 it starts the ranks itself.
int run_job(const RunArgs& args, const JobRegistry& registry, const CancelToken& cancel);

struct BatchArgs {
  std::string file;  // JSON array, JSON lines (.jsonl) or a folder of job files (studio/batch.h)
  std::vector<std::string> overrides;
  std::string runs_dir;
  std::string shard;  // "i/n"; empty: SLURM_ARRAY_TASK_ID/COUNT when both are set, else the whole list
  bool dry_run = false;
  bool quiet = false;
};
// Runs the jobs of a batch (of one shard), then prints the summary; 1 if a job failed, 130 if cancelled.
int batch(const BatchArgs& args, const JobRegistry& registry, const CancelToken& cancel);
int list_jobs(const JobRegistry& registry, const std::string& kind, bool as_json);
int inspect(const std::string& file, bool as_json);
// Compatibility report of a LoRA file (any dialect) against a base model.
int lora_report(const std::string& file, const std::string& base, bool as_json);
int convert_lora(const std::string& in, const std::string& out, const std::string& dialect, const std::string& base,
                 const std::string& names);
int verify(const std::string& model, const std::string& reference, double tolerance);
int convert(const std::string& in, const std::string& out, const std::string& select, const std::string& dtype);
// Shapes images of a preset (data/presets.h) as a folder dataset, clean or with a corruption (Shapes-C,
// data/corruptions.h; "all": a sub-folder per corruption).
int write_shapes(const std::string& preset, int count, int size, const std::string& folder,
                 const std::string& corruption = "none", int severity = 5);
int fold(const std::string& base, const std::vector<std::string>& adapters, const std::vector<double>& weights,
         const std::string& out);

}  // namespace atelier::cli
