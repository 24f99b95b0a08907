#include "studio/job_registry.h"

namespace atelier {

void register_builtin_jobs(JobRegistry& registry) {
  (void)registry;
}

}  // namespace atelier
