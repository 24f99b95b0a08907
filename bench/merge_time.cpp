// Merge time of orthogonal-LoRA concepts into a DiT (random weights): N concepts of rank R on the
// attention and MLP linears, merged with lambda 0.6 by add_lora_updates (the merge job's code: one
// fused W += sum_i lambda * scale * up_i @ down_i per layer).
// Prints one JSON line. Building the bases and LoRAs is not timed (that happens when concepts train).
//
//   atelier_bench_merge [PRESET] [CONCEPTS] [RANK]      defaults: DiT-XL/2 5 20
#include <chrono>
#include <cstdio>
#include <string>

#include "adapters/ortho.h"
#include "core/runtime.h"
#include "diffusion/dit.h"

using namespace atelier;

int main(int argc, char** argv) {
  const std::string preset = argc > 1 ? argv[1] : "DiT-XL/2";
  const std::int64_t concepts = argc > 2 ? std::stoll(argv[2]) : 5, rank = argc > 3 ? std::stoll(argv[3]) : 20;
  const int threads = configure_threads();
  torch::NoGradGuard no_grad;
  DiT model(dit_preset(preset));
  std::vector<std::pair<LoRA, double>> loras;
  for (std::int64_t k = 0; k < concepts; ++k) {
    loras.emplace_back(create_ortho_lora(*model, {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}, {0, k * rank, rank},
                                         static_cast<double>(rank)),
                       0.6);
    for (const auto& l : loras.back().first.layers()) l->up.normal_(0, 0.01);
  }
  std::int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  const auto t0 = std::chrono::steady_clock::now();
  add_lora_updates(loras, [&](const std::string& path) { return layer_at(*model, path).named_parameters()["weight"]; });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "{\"preset\": \"%s\", \"parameters\": %lld, \"concepts\": %lld, \"rank\": %lld, \"layers_per_concept\": %zu, "
      "\"threads\": %d, \"merge_seconds\": %.3f}\n",
      preset.c_str(), static_cast<long long>(params), static_cast<long long>(concepts), static_cast<long long>(rank),
      loras.front().first.paths().size(), threads, seconds);
  return 0;
}
