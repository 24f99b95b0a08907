#include "studio/job_registry.h"

#include <algorithm>

#include "core/report.h"

namespace atelier {

void check_output_fields(const std::vector<FieldInfo>& fields, const json& effective) {
  static const std::vector<std::string> reserved = {"config.json", "status.json", "log.jsonl",  "metrics.json",
                                                    "before.json", ".lock",       "checkpoints"};
  for (const auto& f : fields) {
    if (!f.output || !effective.contains(f.name) || !effective[f.name].is_string()) continue;
    const std::string name = effective[f.name].get<std::string>();
    if (name.empty()) fail_field(f.name, "empty; give a file name such as 'out", f.output->extension, "'");
    if (name.find('/') != std::string::npos || name == "." || name == ".." || name.find('\0') != std::string::npos)
      fail_field(f.name, "'", printable(name), "' is not a plain file name (outputs stay inside the run folder)");
    if (std::find(reserved.begin(), reserved.end(), name) != reserved.end())
      fail_field(f.name, "'", name, "' is a file the run folder keeps for itself");
    const std::string ext = f.output->extension;
    if (name.size() <= ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0)
      fail_field(f.name, "'", printable(name), "' must end in ", ext);
  }
}

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

void JobRegistry::present(const std::string& name, std::string title, JobGroup group) {
  for (auto& k : kinds_)
    if (k.name == name) {
      k.title = std::move(title);
      k.group = group;
      return;
    }
  get(name);  // throws, listing the known kinds
}

std::vector<const JobKind*> JobRegistry::presented() const {
  std::vector<const JobKind*> out;
  for (const auto& k : kinds_) out.push_back(&k);
  std::stable_sort(out.begin(), out.end(), [](const JobKind* a, const JobKind* b) { return a->group < b->group; });
  return out;
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
