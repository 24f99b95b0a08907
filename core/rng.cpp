#include "core/rng.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <mutex>

namespace atelier {

Rng::Rng(std::uint64_t seed) : seed_(seed), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

torch::Tensor Rng::randn(at::IntArrayRef shape, const torch::TensorOptions& opts) {
  auto t = torch::randn(shape, gen_, opts.device(torch::kCPU));
  return opts.device().is_cpu() ? t : t.to(opts.device());
}

torch::Tensor Rng::rand(at::IntArrayRef shape, const torch::TensorOptions& opts) {
  auto t = torch::rand(shape, gen_, opts.device(torch::kCPU));
  return opts.device().is_cpu() ? t : t.to(opts.device());
}

torch::Tensor Rng::randint(std::int64_t high, at::IntArrayRef shape, const torch::TensorOptions& opts) {
  auto t = torch::randint(high, shape, gen_, opts.device(torch::kCPU).dtype(torch::kLong));
  return opts.device().is_cpu() ? t : t.to(opts.device());
}

std::uint64_t Rng::next_u64() {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  return gen_.get<at::CPUGeneratorImpl>()->random64();
}

double Rng::uniform() {
  return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
}

torch::Tensor Rng::state() const {
  return gen_.get_state();
}

void Rng::set_state(const torch::Tensor& state) {
  gen_.set_state(state);
}

}  // namespace atelier
