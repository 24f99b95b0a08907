#include "core/runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <thread>

#include "core/error.h"

namespace atelier {

int configure_threads(int threads) {
  if (threads <= 0) {
    const char* env = std::getenv("ATELIER_THREADS");
    threads = env != nullptr ? std::atoi(env) : 0;
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

namespace {
int local_rank = 0;
}

void set_local_rank(int rank) {
  local_rank = rank;
}

c10::Device select_device(const std::string& name, const std::string& field) {
  const bool cuda = at::hasCUDA();
  const auto local_cuda = [] {
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % static_cast<int>(at::getNumGPUs())));
  };
  if (name == "auto") return cuda ? local_cuda() : c10::Device(c10::kCPU);
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name.rfind("cuda", 0) != 0) fail_field(field, "'", name, "' is not auto, cpu, cuda or cuda:N");
  if (!cuda)
    fail_field(field, "'", name,
               "' asked for, but this build or machine has no CUDA device (build with -DATELIER_TORCH_CUDA=ON on a "
               "machine with an NVIDIA driver, or use \"cpu\")");
  try {
    c10::Device d(name);
    if (d.index() >= static_cast<int>(at::getNumGPUs()))
      fail_field(field, "'", name, "' but only ", at::getNumGPUs(), " CUDA device(s) are present");
    return d.has_index() ? d : local_cuda();
  } catch (const c10::Error&) {
    fail_field(field, "'", name, "' is not auto, cpu, cuda or cuda:N");
  }
}

}  // namespace atelier
