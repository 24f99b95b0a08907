// `atelier`: the command line over the built-in job kinds (studio/builtin_jobs.cpp).
#include "studio/cli/commands.h"
#include "studio/job_registry.h"

int main(int argc, char** argv) {
  return atelier::cli::main(argc, argv, atelier::JobRegistry::builtin());
}
