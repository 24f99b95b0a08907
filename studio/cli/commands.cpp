#include "studio/cli/commands.h"

#include <torch/torch.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "core/distributed.h"
#include "core/image.h"
#include "core/runtime.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "data/corruptions.h"
#include "data/presets.h"
#include "studio/batch.h"
#include "studio/model_ops.h"
#include "studio/runner.h"
#include "studio/verify.h"

namespace atelier::cli {

namespace {

// `run --nproc N`: this program again as ranks 0..N-1 on this machine (torchrun's variables, cores / N
// threads each unless ATELIER_THREADS says otherwise). Ctrl-C reaches every rank from the terminal. A rank
// that dies makes the others fail at their next collective (core/distributed.h). Returns rank 0's exit
// code, or the first failing rank's.
int launch_ranks(const RunArgs& args) {
  const int port = free_loopback_port();
  std::vector<std::string> argv_text{"atelier", "run", args.job_file};
  for (const auto& o : args.overrides) argv_text.insert(argv_text.end(), {"--set", o});
  if (!args.run_dir.empty()) argv_text.insert(argv_text.end(), {"--run-dir", args.run_dir});
  if (args.resume) argv_text.push_back("--resume");
  if (args.quiet) argv_text.push_back("-q");
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads = std::to_string(std::max(1u, cores / static_cast<unsigned>(args.nproc)));
  std::vector<pid_t> ranks;
  for (int r = 0; r < args.nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("--nproc: cannot start rank ", r, ": ", std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(args.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(args.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("ATELIER_THREADS", threads.c_str(), 0);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "atelier: cannot start rank %d: %s\n", r, std::strerror(errno));
      ::_exit(1);
    }
    ranks.push_back(pid);
  }
  int rank0 = 0, failure = 0;
  for (std::size_t left = ranks.size(); left > 0;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;  // Ctrl-C: the ranks got it too and are cancelling
      break;
    }
    const auto it = std::find(ranks.begin(), ranks.end(), pid);
    if (it == ranks.end()) continue;
    --left;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (it == ranks.begin()) rank0 = code;
    if (code != 0 && failure == 0) failure = code;
  }
  return rank0 != 0 ? rank0 : failure;
}

}  // namespace

int run_job(const RunArgs& args, const JobRegistry& registry, const CancelToken& cancel) {
  if (args.nproc > 1) {
    if (std::getenv("WORLD_SIZE") != nullptr)
      fail("--nproc: this process is already rank of a data-parallel run (WORLD_SIZE is set); drop --nproc");
    (void)parallel_environment();  // a malformed ATELIER_DIST_* variable fails once, here, not in every rank
    return launch_ranks(args);
  }
  // A data-parallel rank when the launcher's environment says so: every rank joins before any checks, so
  // a rank that stops early ends the others at once instead of leaving them waiting.
  const ParallelEnvironment env = parallel_environment();
  std::unique_ptr<ProcessGroup> group;
  if (env.distributed()) {
    set_local_rank(env.local_rank);
    group = std::make_unique<ProcessGroup>(env);
  }
  RunRequest request = load_job_file(args.job_file);
  request.overrides = args.overrides;
  request.resume = args.resume;
  request.run_dir = args.run_dir;
  request.rank = env.rank;
  JobRunner runner(registry);
  PreparedRun prepared = runner.prepare(request);
  prepared.parallel = group.get();
  Reporter reporter;
  const std::string program = env.rank > 0 ? "atelier rank " + std::to_string(env.rank) : "atelier";
  reporter.add_sink(std::make_shared<TtySink>(stderr, args.quiet || env.rank > 0, program));
  RunResult result = runner.run(prepared, reporter, cancel);
  switch (result.status) {
    case RunResult::Status::Completed: return 0;
    case RunResult::Status::Cancelled: return 130;
    case RunResult::Status::Failed: return 1;
  }
  return 1;
}

int batch(const BatchArgs& args, const JobRegistry& registry, const CancelToken& cancel) {
  const BatchShard shard = !args.shard.empty()
                               ? parse_shard(args.shard)
                               : slurm_shard([](const char* name) { return std::getenv(name); }).value_or(BatchShard{});
  const BatchList list = load_batch(args.file, args.runs_dir);
  JobRunner runner(registry);
  if (args.dry_run) {
    std::vector<PlannedJob> plan;
    for (const BatchJob* job : shard_jobs(list, shard)) plan.push_back(plan_job(runner, *job, args.overrides));
    std::fputs(plan_table(plan, shard, list.jobs.size()).c_str(), stdout);
    const bool invalid = std::any_of(plan.begin(), plan.end(),
                                     [](const PlannedJob& p) { return p.action == PlannedJob::Action::Invalid; });
    return invalid ? 1 : 0;
  }
  const auto make_reporter = [&](const BatchJob&) {
    auto reporter = std::make_unique<Reporter>();
    reporter->add_sink(std::make_shared<TtySink>(stderr, args.quiet, "atelier"));
    return reporter;
  };
  const BatchReport report = run_batch(runner, list, shard, args.overrides, make_reporter, cancel);
  std::fflush(stderr);
  std::fputs(summary_table(report).c_str(), stdout);
  if (report.any(BatchResult::Status::Cancelled) || report.any(BatchResult::Status::NotRun)) return 130;
  return report.any(BatchResult::Status::Failed) ? 1 : 0;
}

int list_jobs(const JobRegistry& reg, const std::string& kind, bool as_json) {
  json all = json::array();
  for (const auto& k : reg.kinds()) {
    if (!kind.empty() && k.name != kind) continue;
    json fields = json::array();
    for (const auto& f : k.fields) {
      json fj = {{"name", f.name}, {"type", f.type}, {"default", f.default_value}, {"help", f.help}};
      if (f.range) fj["range"] = {f.range->min, f.range->max};
      if (!f.choices.empty()) fj["choices"] = f.choices;
      if (f.input) fj["input"] = input_name(*f.input);
      if (!f.per_item.empty()) fj["per_item"] = f.per_item;
      fields.push_back(fj);
    }
    all.push_back({{"kind", k.name}, {"title", k.title}, {"help", k.help}, {"fields", fields}});
  }
  if (!kind.empty() && all.empty()) reg.get(kind);  // throws, listing the known kinds
  if (as_json) {
    std::cout << all.dump(2) << "\n";
    return 0;
  }
  for (const auto& k : all) {
    std::cout << k["kind"].get<std::string>() << ": " << k["help"].get<std::string>() << "\n";
    for (const auto& f : k["fields"]) {
      std::string extra;
      if (f.contains("range")) extra = " in [" + f["range"][0].dump() + ", " + f["range"][1].dump() + "]";
      if (f.contains("choices")) extra = " one of " + f["choices"].dump();
      std::printf("  %-18s %-12s = %-14s %s%s\n", f["name"].get<std::string>().c_str(),
                  f["type"].get<std::string>().c_str(), f["default"].dump().c_str(),
                  f["help"].get<std::string>().c_str(), extra.c_str());
    }
    std::cout << "\n";
  }
  return 0;
}

namespace {
std::string shape_string(const torch::Tensor& t) {
  std::string s = "[";
  for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

void print_tensors(const TensorFile& file, std::int64_t& total) {
  for (const auto& [name, t] : file.tensors) {
    std::printf("  %-56s %-10s %s\n", printable(name, false).c_str(),
                std::string(c10::toString(t.scalar_type())).c_str(), shape_string(t).c_str());
    total += t.numel();
  }
}
}  // namespace

int inspect(const std::string& file, bool as_json) {
  FileFormat format = detect_format(file);
  json out = {{"file", file}, {"format", format_name(format)}};
  if (format == FileFormat::Png || format == FileFormat::Jpeg) {
    Image img = load_image(file, 0);
    out["width"] = img.width;
    out["height"] = img.height;
    out["channels"] = img.channels;
    if (format == FileFormat::Png) out["text"] = read_png_text(file);
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";  // images: the same JSON either way
    return 0;
  }
  if (format == FileFormat::Unknown) fail(file, ": not a safetensors file, torch checkpoint or image");
  TensorFile tf = load_tensor_file(file);
  std::int64_t total = 0;
  if (as_json) {
    json tensors = json::object();
    for (const auto& [name, t] : tf.tensors) {
      tensors[name] = {{"dtype", std::string(c10::toString(t.scalar_type()))}, {"shape", t.sizes().vec()}};
      total += t.numel();
    }
    out["tensors"] = tensors;
    out["metadata"] = tf.metadata;
    out["parameters"] = total;
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::printf("%s: %s, %zu tensors\n", file.c_str(), format_name(format), tf.tensors.size());
  print_tensors(tf, total);
  std::printf("total elements: %lld\n", static_cast<long long>(total));
  if (!tf.metadata.empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : tf.metadata) {  // a file's text is shown escaped, never sent to the terminal raw
      std::string shown = printable(v.size() > 200 ? v.substr(0, 200) + "..." : v, false);
      std::printf("  %s: %s\n", printable(k, false).c_str(), shown.c_str());
    }
  }
  return 0;
}

int verify(const std::string& model, const std::string& reference, double tolerance) {
  bool ok = true;
  const VerifyReport report = verify_model(model, reference, tolerance);
  for (const auto& w : report.warnings) std::fprintf(stderr, "atelier: warning: %s\n", w.c_str());
  for (const auto& c : report.checks) {
    std::printf("%-12s max |diff| %.3g (%.3g of scale %.3g, tolerance %.3g): %s\n", c.name.c_str(), c.max_abs,
                c.max_abs / c.scale, c.scale, tolerance, c.passed ? "ok" : "MISMATCH");
    ok = ok && c.passed;
  }
  std::fflush(stdout);
  if (!ok) std::fprintf(stderr, "atelier: error: %s does not reproduce %s\n", model.c_str(), reference.c_str());
  return ok ? 0 : 1;
}

int convert(const std::string& in, const std::string& out, const std::string& select, const std::string& dtype) {
  TensorFile tf = load_tensor_file(in);
  std::string prefix = select.empty() ? "" : select + ".";
  TensorMap tensors = tensors_under(tf.tensors, prefix);
  if (tensors.empty()) fail(in, ": no tensors under '", select, "'");
  if (!dtype.empty()) {
    static const std::map<std::string, torch::ScalarType> kDTypes = {
        {"f32", torch::kFloat}, {"f16", torch::kHalf}, {"bf16", torch::kBFloat16}};
    auto it = kDTypes.find(dtype);
    if (it == kDTypes.end()) fail("--dtype: '", dtype, "' is not one of f32, f16, bf16");
    for (auto& [_, t] : tensors)
      if (t.is_floating_point()) t = t.to(it->second);
  }
  Metadata meta;
  for (const auto& [k, v] : tf.metadata)
    if (prefix.empty() || k.rfind(prefix, 0) == 0 || k.find('.') == std::string::npos) meta[k] = v;
  meta["atelier.converted_from"] = std::filesystem::path(in).filename().string();
  safetensors::save(out, tensors, meta);
  std::printf("wrote %s (%zu tensors)\n", out.c_str(), tensors.size());
  return 0;
}

int fold(const std::string& base, const std::vector<std::string>& adapters, const std::vector<double>& weights,
         const std::string& out) {
  const std::size_t classes = fold_to_file(base, adapters, weights, out);
  std::printf("wrote %s: %s + %zu adapter(s), %zu classes\n", out.c_str(), base.c_str(), adapters.size(), classes);
  return 0;
}

int lora_report(const std::string& file, const std::string& base, bool as_json) {
  if (as_json)
    std::cout << lora_compatibility(file, base).dump(2) << "\n";
  else
    std::fputs(compatibility_report(file, base).c_str(), stdout);
  return 0;
}

int convert_lora(const std::string& in, const std::string& out, const std::string& dialect, const std::string& base,
                 const std::string& names) {
  const LoRAConversion c = convert_lora_file(in, out, dialect, base, names);
  std::printf("wrote %s: %s LoRA with %s layer names, %zu model layers (from %s, %s names)\n", out.c_str(),
              dialect.c_str(), (names.empty() ? c.from_names : names).c_str(), c.layers, c.from_dialect.c_str(),
              c.from_names.c_str());
  return 0;
}

int write_shapes(const std::string& preset, int count, int size, const std::string& folder,
                 const std::string& corruption, int severity) {
  if (preset == "list") {
    std::printf("Shapes presets:\n");
    for (const auto& p : shapes_presets()) std::printf("  %s: %s\n", p.name.c_str(), p.help.c_str());
    return 0;
  }
  if (corruption == "list") {
    std::printf("Shapes-C corruptions (--severity 1..5; `all` writes a sub-folder each):\n");
    for (const auto& name : corruption_names()) std::printf("  %s\n", name.c_str());
    return 0;
  }
  const ShapesPreset& p = with_context([&]() -> const ShapesPreset& { return shapes_preset(preset); }, "--preset");
  const ShapesCorruption c{corruption, severity};
  with_context([&] { c.check(); }, "--corruption");  // --severity is range-checked by the parser
  write_shapes_folder(p.data, size, count, folder, c);
  const std::string what = c.none() ? preset : preset + ", " + corruption + " severity " + std::to_string(severity);
  std::printf("wrote %d %dx%d images (%s) to %s\n",
              c.name == "all" ? count * static_cast<int>(corruption_names().size()) : count, size, size, what.c_str(),
              folder.c_str());
  return 0;
}

}  // namespace atelier::cli
