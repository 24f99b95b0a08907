// One UNet2DConditionModel forward of the real SD-1.5 config (random weights) on the CPU with all cores:
// batch 1, 77x768 context, at the given latent sides (32 = 256x256 images, 64 = 512x512). A warm-up forward
// runs first at each side; then RUNS timed forwards, each reported (the first forwards of a fresh
// process run slower while its memory settles, so min is the steady figure). Prints one JSON line per
// side; peak RSS is the process's so far (the largest side run so far dominates).
//
//   atelier_bench_unet [DTYPE] [RUNS] [SIDE...]     defaults: fp32 3 32 64
// DTYPE: fp32; fp16w (weights stored in fp16, cast to fp32 at use: fp32 compute, half the weight memory);
// bf16 (weights and compute). Non-fp32 weights are created in their dtype, so peak RSS is theirs.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/runtime.h"
#include "diffusion/unet.h"

using namespace atelier;

int main(int argc, char** argv) {
  const std::string dtype_name = argc > 1 ? argv[1] : "fp32";
  const int runs = argc > 2 ? std::stoi(argv[2]) : 3;
  std::vector<std::int64_t> sides;
  for (int a = 3; a < argc; ++a) sides.push_back(std::stoll(argv[a]));
  if (sides.empty()) sides = {32, 64};
  if ((dtype_name != "fp32" && dtype_name != "fp16w" && dtype_name != "bf16") || runs < 1) {
    std::fprintf(stderr, "usage: %s [fp32|fp16w|bf16] [RUNS] [SIDE...]\n", argv[0]);
    return 2;
  }
  const auto weight_dtype = dtype_name == "bf16"    ? torch::kBFloat16
                            : dtype_name == "fp16w" ? torch::kHalf
                                                    : torch::kFloat;
  const auto dtype = dtype_name == "bf16" ? torch::kBFloat16 : torch::kFloat;  // inputs and compute
  const int threads = configure_threads();
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  torch::set_default_dtype(c10::scalarTypeToTypeMeta(weight_dtype));
  UNet2DConditionModel unet(unet_preset("sd15"));
  torch::set_default_dtype(c10::scalarTypeToTypeMeta(torch::kFloat));
  unet->eval();
  std::int64_t params = 0;
  for (const auto& p : unet->parameters()) params += p.numel();

  for (const auto side : sides) {
    auto x = torch::randn({1, 4, side, side}).to(dtype);
    auto context = torch::randn({1, 77, 768}).to(dtype);
    auto t = torch::full({1}, 999, torch::kLong);
    unet->forward(x, t, context);  // warm-up
    std::string times;
    double best = 1e300;
    for (int r = 0; r < runs; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      unet->forward(x, t, context);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, seconds);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.3f", times.empty() ? "" : ", ", seconds);
      times += buf;
    }
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    std::printf(
        "{\"model\": \"sd15\", \"parameters\": %lld, \"dtype\": \"%s\", \"threads\": %d, \"latent\": %lld, "
        "\"image\": %lld, \"forward_seconds\": [%s], \"min_seconds\": %.3f, \"peak_rss_mb\": %.1f}\n",
        static_cast<long long>(params), dtype_name.c_str(), threads, static_cast<long long>(side),
        static_cast<long long>(8 * side), times.c_str(), best, usage.ru_maxrss / 1024.0);
    std::fflush(stdout);
  }
  return 0;
}
