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

struct JobKind {
  std::string name;
  std::string help;
  std::vector<FieldInfo> fields;
  // Validates a job document (without "kind") and returns the effective config (all fields).
  std::function<json(const json&)> normalize;
  std::function<void(const json& effective, JobContext&)> run;
};

class JobRegistry {
 public:
  // The registry with every built-in job kind.
  static const JobRegistry& builtin();

  void add(JobKind kind);
  const JobKind* find(const std::string& name) const;
  const JobKind& get(const std::string& name) const;  // Error listing the known kinds
  const std::vector<JobKind>& kinds() const { return kinds_; }

  template <class Config>
  void add(const std::string& name, const std::string& help, void (*run)(const Config&, JobContext&)) {
    add(JobKind{name, help, describe<Config>(), [](const json& j) { return to_json(from_json<Config>(j, {"kind"})); },
                [run](const json& j, JobContext& ctx) { run(from_json<Config>(j, {"kind"}), ctx); }});
  }

 private:
  std::vector<JobKind> kinds_;
};

// Registers the built-in kinds of every engine layer (defined in builtin_jobs.cpp).
void register_builtin_jobs(JobRegistry& registry);

}  // namespace atelier
