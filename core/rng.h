// The one seeded random generator a job owns and passes explicitly (STYLE.md 8). Draws happen on the
// CPU generator and are moved to the target device, so the same seed gives the same bits everywhere.
#pragma once
#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>

namespace atelier {

class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  at::Generator& generator() { return gen_; }
  std::uint64_t seed() const { return seed_; }

  torch::Tensor randn(at::IntArrayRef shape, const torch::TensorOptions& opts = {});
  torch::Tensor rand(at::IntArrayRef shape, const torch::TensorOptions& opts = {});
  torch::Tensor randint(std::int64_t high, at::IntArrayRef shape, const torch::TensorOptions& opts = {});
  std::uint64_t next_u64();
  double uniform();  // [0, 1)

  // Full generator state as a uint8 tensor (saved in checkpoints), and its restore.
  torch::Tensor state() const;
  void set_state(const torch::Tensor& state);

 private:
  std::uint64_t seed_;
  at::Generator gen_;
};

}  // namespace atelier
