// Job kinds registered by name with typed configs. The CLI (`atelier run`, `atelier jobs`) and the GUI
// (Train panel forms) both read this registry; engine code provides run functions taking a typed
// config and a JobContext.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"

namespace atelier {

// How the studio presents a kind: customization jobs (what an artist runs on their images) first, then the
// methods' pipelines (distillation, test-time adaptation), then tools (base models, probes, sampling).
enum class JobGroup { Customize, Pipeline, Tool };

struct JobKind {
  std::string name;
  std::string help;
  std::string title;  // a plain name for the studio ("Adapt to a style (DiffFit)"); the name when empty
  JobGroup group = JobGroup::Tool;
  std::vector<FieldInfo> fields;
  // Validates a job document (without "kind") and returns the effective config (all fields).
  std::function<json(const json&)> normalize;
  std::function<void(const json& effective, JobContext&)> run;
};

// Output fields (OutputFile) name plain files inside the run folder, with the field's extension, and none
// of the files the runner keeps there (config.json, status.json, log.jsonl, ...). FieldError otherwise.
void check_output_fields(const std::vector<FieldInfo>& fields, const json& effective);

class JobRegistry {
 public:
  // The registry with every built-in job kind.
  static const JobRegistry& builtin();

  void add(JobKind kind);
  const JobKind* find(const std::string& name) const;
  const JobKind& get(const std::string& name) const;  // Error listing the known kinds
  const std::vector<JobKind>& kinds() const { return kinds_; }
  // Sets the studio's plain name and group of a registered kind (Error when unknown).
  void present(const std::string& name, std::string title, JobGroup group);
  // The kinds in the studio's order: by group, then in registration order.
  std::vector<const JobKind*> presented() const;

  template <class Config>
  void add(const std::string& name, const std::string& help, void (*run)(const Config&, JobContext&)) {
    auto fields = describe<Config>();
    auto normalize = [fields](const json& j) {
      json effective = to_json(from_json<Config>(j, {"kind"}));
      check_output_fields(fields, effective);
      return effective;
    };
    add(JobKind{name, help, {}, JobGroup::Tool, std::move(fields), normalize, [run](const json& j, JobContext& ctx) {
                  run(from_json<Config>(j, {"kind"}), ctx);
                }});
  }

 private:
  std::vector<JobKind> kinds_;
};

// Registers the built-in kinds of every engine layer (defined in builtin_jobs.cpp).
void register_builtin_jobs(JobRegistry& registry);

}  // namespace atelier
