#include "studio/job_registry.h"

namespace atelier {

const JobRegistry& JobRegistry::builtin() {
  static const JobRegistry registry = [] {
    JobRegistry r;
    register_builtin_jobs(r);
    return r;
  }();
  return registry;
}

void JobRegistry::add(JobKind kind) {
  if (find(kind.name) != nullptr) fail("job kind '", kind.name, "' registered twice");
  kinds_.push_back(std::move(kind));
}

const JobKind* JobRegistry::find(const std::string& name) const {
  for (const auto& k : kinds_)
    if (k.name == name) return &k;
  return nullptr;
}

const JobKind& JobRegistry::get(const std::string& name) const {
  if (const JobKind* k = find(name)) return *k;
  std::string list;
  for (const auto& k : kinds_) list += (list.empty() ? "" : ", ") + k.name;
  fail("unknown job kind '", name, "' (known: ", list, ")");
}

}  // namespace atelier
