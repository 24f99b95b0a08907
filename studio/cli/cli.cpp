// `atelier`: the headless batch client of the app layer (main.cpp runs it on the built-in job kinds).
//
// Exit codes:
//   0    success
//   1    error: bad input (job file, config value, model or data file) or a failed job; one line on stderr
//        (`atelier batch`: any job of the shard failed; the summary names it)
//   2    usage error (unknown command or option)
//   130  cancelled (Ctrl-C); the run folder holds a checkpoint: continue with `atelier run JOB --resume`
//        (`atelier batch`: the same command again resumes the cancelled job and runs the rest)
#include <torch/torch.h>

#include <unistd.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "core/error.h"
#include "studio/cli/commands.h"
#include "studio/job_registry.h"

namespace atelier::cli {
namespace {
CancelToken g_cancel;

void on_sigint(int) {
  if (g_cancel.requested()) _exit(130);  // second Ctrl-C: stop now
  g_cancel.request();
  const char msg[] = "\ncancelling after the current step (Ctrl-C again to abort)...\n";
  (void)!write(2, msg, sizeof msg - 1);
}
}  // namespace

int main(int argc, char** argv, const JobRegistry& registry) {
  CLI::App app{"atelier: customize image generators (DiT, LoRA, DiffFit, ...) from the command line"};
  app.require_subcommand(1);
  app.footer("Exit codes: 0 ok, 1 error (one line on stderr), 2 usage, 130 cancelled (resume with --resume).");

  RunArgs run;
  auto* run_cmd = app.add_subcommand("run", "Run a job file (JSON with a \"kind\" and its fields)");
  run_cmd->add_option("job", run.job_file, "job file, e.g. assets/jobs/probe.json")->required();
  run_cmd->add_option("--set", run.overrides, "override a field: key=value (repeatable)");
  run_cmd->add_option("--run-dir", run.run_dir, "run folder (default: runs/<job file stem>)");
  run_cmd->add_flag("--resume", run.resume, "continue the run in the run folder from its last checkpoint");
  run_cmd->add_flag("-q,--quiet", run.quiet, "only warnings and errors");
  run_cmd
      ->add_option("--nproc", run.nproc,
                   "train with N data-parallel processes on this machine (Gloo; torchrun and srun set the "
                   "environment instead)")
      ->check(CLI::Range(1, 256));

  BatchArgs batch_args;
  auto* batch_cmd = app.add_subcommand(
      "batch", "Run a list of jobs (JSON array, JSON lines or a folder), one shard of it per array job");
  batch_cmd->add_option("file", batch_args.file, "jobs.json (array), jobs.jsonl (one job a line) or a folder")
      ->required();
  batch_cmd->add_option("--set", batch_args.overrides, "override a field of every job: key=value (repeatable)");
  batch_cmd->add_option("--runs-dir", batch_args.runs_dir,
                        "where job k runs: <runs-dir>/<kkk>-<name> (default: runs/batch-<file stem>)");
  batch_cmd->add_option("--shard", batch_args.shard,
                        "i/n: run jobs k with k mod n == i (0 <= i < n; default: from SLURM_ARRAY_TASK_ID and "
                        "SLURM_ARRAY_TASK_COUNT when set)");
  batch_cmd->add_flag("--dry-run", batch_args.dry_run, "print what would run, resume or be skipped; run nothing");
  batch_cmd->add_flag("-q,--quiet", batch_args.quiet, "only warnings, errors and the summary");

  std::string kind;
  bool jobs_json = false;
  auto* jobs_cmd = app.add_subcommand("jobs", "List job kinds with their fields, types, defaults and help");
  jobs_cmd->add_option("kind", kind, "show only this kind");
  jobs_cmd->add_flag("--json", jobs_json, "machine-readable output");

  std::string file;
  bool inspect_json = false;
  auto* inspect_cmd = app.add_subcommand("inspect", "Show tensors, dtypes, shapes and metadata of a model file");
  inspect_cmd->add_option("file", file, ".safetensors, .pt/.ckpt/.bin, or a PNG/JPEG")->required();
  inspect_cmd->add_flag("--json", inspect_json, "machine-readable output");
  std::string inspect_base;
  inspect_cmd->add_option("--base", inspect_base,
                          "for a LoRA file (Atelier, PEFT, kohya): report which layers fit this base model");

  std::string in, out, select, dtype;
  auto* convert_cmd = app.add_subcommand("convert", "Convert a torch checkpoint to safetensors");
  convert_cmd->add_option("input", in, "torch checkpoint (.pt/.ckpt/.bin) or safetensors")->required();
  convert_cmd->add_option("output", out, "output .safetensors")->required();
  convert_cmd->add_option("--select", select, "keep only tensors under this key (e.g. ema), prefix removed");
  convert_cmd->add_option("--dtype", dtype, "cast floating tensors: f32, f16 or bf16");

  std::string lora_in, lora_out, lora_to, lora_base, lora_names;
  auto* lora_cmd = app.add_subcommand("convert-lora", "Convert a LoRA between the Atelier, PEFT and kohya dialects");
  lora_cmd->add_option("input", lora_in, "LoRA file (dialect detected)")->required();
  lora_cmd->add_option("output", lora_out, "output .safetensors (PEFT: adapter_config.json is written beside it)")
      ->required();
  lora_cmd->add_option("--to", lora_to, "atelier, peft or kohya")->required();
  lora_cmd->add_option("--base", lora_base, "the base model the LoRA belongs to")->required();
  lora_cmd->add_option("--names", lora_names,
                       "layer names: model (the model's own) or diffusers (a DiT's transformer_blocks.N.attn1.to_q, "
                       "...); default: as the input");

  std::string fold_base, fold_out;
  std::vector<std::string> fold_adapters;
  std::vector<double> fold_weights;
  auto* fold_cmd = app.add_subcommand("fold", "Fold adapters into their base model: one standalone DiT file");
  fold_cmd->add_option("base", fold_base, "base model the adapters were trained on")->required();
  fold_cmd->add_option("adapters", fold_adapters, "adapter files (.safetensors)")->required();
  fold_cmd->add_option("-o,--output", fold_out, "output model .safetensors")->required();
  fold_cmd->add_option("--weights", fold_weights, "one weight per adapter (default 1)");

  std::string verify_model_path, verify_reference;
  double verify_tolerance = 1e-5;
  auto* verify_cmd = app.add_subcommand("verify", "Run a model on a reference file's inputs and compare outputs");
  verify_cmd->add_option("model", verify_model_path, "DiT or VAE weights (.safetensors, .pt, .bin)")->required();
  verify_cmd->add_option("reference", verify_reference, "safetensors with inputs and expected outputs")->required();
  verify_cmd->add_option("--tolerance", verify_tolerance, "max |diff| allowed, relative to max(1, max |reference|)");

  std::string shapes_preset = "base classes", shapes_out;
  int shapes_count = 256, shapes_size = 32;
  auto* shapes_cmd =
      app.add_subcommand("shapes", "Write Shapes images as a folder dataset (class sub-folders, .txt captions)");
  shapes_cmd->add_option("folder", shapes_out, "output folder")->required();
  shapes_cmd->add_option("--preset", shapes_preset, "preset (as in the app's Data panel; `--preset list` lists them)");
  shapes_cmd->add_option("--count", shapes_count, "number of images")->check(CLI::Range(1, 1000000));
  shapes_cmd->add_option("--size", shapes_size, "image size in pixels")->check(CLI::Range(8, 1024));
  std::string shapes_corruption = "none";
  int shapes_severity = 5;
  shapes_cmd->add_option("--corruption", shapes_corruption,
                         "Shapes-C: an ImageNet-C corruption, `all` (a sub-folder each) or `none`; "
                         "`--corruption list` lists them");
  shapes_cmd->add_option("--severity", shapes_severity, "corruption severity, 1..5")->check(CLI::Range(1, 5));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    if (*run_cmd) {
      std::signal(SIGINT, on_sigint);
      std::signal(SIGTERM, on_sigint);
      return run_job(run, registry, g_cancel);
    }
    if (*batch_cmd) {
      std::signal(SIGINT, on_sigint);
      std::signal(SIGTERM, on_sigint);
      return batch(batch_args, registry, g_cancel);
    }
    if (*jobs_cmd) return list_jobs(registry, kind, jobs_json);
    if (*shapes_cmd)
      return write_shapes(shapes_preset, shapes_count, shapes_size, shapes_out, shapes_corruption, shapes_severity);
    if (*inspect_cmd)
      return inspect_base.empty() ? inspect(file, inspect_json) : lora_report(file, inspect_base, inspect_json);
    if (*lora_cmd) return convert_lora(lora_in, lora_out, lora_to, lora_base, lora_names);
    if (*verify_cmd) return verify(verify_model_path, verify_reference, verify_tolerance);
    if (*convert_cmd) return convert(in, out, select, dtype);
    if (*fold_cmd) return fold(fold_base, fold_adapters, fold_weights, fold_out);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "atelier: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "atelier: error: %s\n", e.what());
    return 1;
  }
  return 2;
}

}  // namespace atelier::cli
