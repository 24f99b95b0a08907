#include "core/runtime.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <thread>

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

}  // namespace atelier
