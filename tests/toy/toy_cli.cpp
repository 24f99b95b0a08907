// The `atelier` command line with one more job kind: what an application built on the engine adds to
// ship a new kind. The test suite drives it like the real CLI (run, jobs, --resume, SIGKILL).
#include "studio/cli/commands.h"
#include "studio/job_registry.h"
#include "tests/toy/toy_job.h"

int main(int argc, char** argv) {
  atelier::JobRegistry registry = atelier::JobRegistry::builtin();
  registry.add<atelier::test::ToyConfig>("toy_regression", "Fit a small MLP to a random teacher (test kind)",
                                         &atelier::test::toy_regression_job);
  return atelier::cli::main(argc, argv, registry);
}
