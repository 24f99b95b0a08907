// Process-wide LibTorch settings. LibTorch starts with one intra-op thread on some VMs: every entry
// point calls configure_threads() (0 = all cores).
#pragma once
#include <c10/core/Device.h>

#include <string>

namespace atelier {
int configure_threads(int threads = 0);  // returns the thread count in use
// This process's rank on its node in a data-parallel run (core/distributed.h): picks its CUDA device.
void set_local_rank(int rank);

// The device a job runs on: "auto" (a CUDA device when this build and machine have one, else the CPU),
// "cpu", "cuda" or "cuda:N". "auto" and "cuda" take device local_rank mod device count: the first one in
// one process, and one per rank of a data-parallel run on a node. Error naming `field` when CUDA is asked
// for and unavailable.
c10::Device select_device(const std::string& name, const std::string& field = "device");
}  // namespace atelier
