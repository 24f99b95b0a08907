// DiT training-step and sampling throughput at 32x32x4 inputs, one configuration per process (so the
// peak RSS is that configuration's). Prints one JSON line. Compared side by side with
// bench/dit_reference.py (diffusers) by bench/run_dit_bench.sh.
//
//   atelier_bench_dit PRESET BATCH TRAIN_STEPS SAMPLE_BATCH SAMPLE_STEPS
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "core/rng.h"
#include "core/runtime.h"
#include "diffusion/dit.h"
#include "samplers/schedule.h"

using namespace atelier;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s PRESET BATCH TRAIN_STEPS SAMPLE_BATCH SAMPLE_STEPS\n", argv[0]);
    return 2;
  }
  const std::string preset = argv[1];
  const std::int64_t batch = std::stoll(argv[2]), train_steps = std::stoll(argv[3]);
  const std::int64_t sample_batch = std::stoll(argv[4]), sample_steps = std::stoll(argv[5]);
  const int threads = configure_threads();
  torch::manual_seed(0);
  DiTConfig config = dit_preset(preset);  // 32x32x4 inputs, 1000 classes, learned sigma
  DiT model(config);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-4).weight_decay(0));
  const auto schedule = NoiseSchedule::linear(1000);
  Rng rng(0);

  // Training: eps MSE on the first C output channels (the reference script's loss), AdamW step.
  auto train_step = [&] {
    auto x0 = rng.randn({batch, 4, 32, 32});
    auto noise = rng.randn(x0.sizes());
    auto t = rng.randint(1000, {batch});
    auto y = rng.randint(1000, {batch});
    auto out = model->forward(add_noise(schedule, x0, noise, t), t, y);
    auto loss = (out.narrow(1, 0, 4) - noise).pow(2).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i) train_step();
  auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < train_steps; ++i) train_step();
  const double train_s = seconds_since(t0);

  // Sampling: classifier-free guidance doubles the batch of every network call.
  torch::NoGradGuard no_grad;
  model->eval();
  auto x = rng.randn({2 * sample_batch, 4, 32, 32});
  auto y = torch::cat({rng.randint(1000, {sample_batch}), torch::full({sample_batch}, 1000, torch::kLong)});
  model->forward(x, torch::full({2 * sample_batch}, 999.0), y);
  t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < sample_steps; ++i) model->forward(x, torch::full({2 * sample_batch}, 999.0 - i), y);
  const double sample_s = seconds_since(t0);

  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "{\"impl\": \"atelier\", \"preset\": \"%s\", \"threads\": %d, \"train_img_per_s\": %.2f, "
      "\"sample_img_per_s\": %.3f, \"peak_rss_mb\": %.1f}\n",
      preset.c_str(), threads, static_cast<double>(batch * train_steps) / train_s,
      static_cast<double>(sample_batch) / (sample_s / static_cast<double>(sample_steps) * 50.0),
      usage.ru_maxrss / 1024.0);
  return 0;
}
