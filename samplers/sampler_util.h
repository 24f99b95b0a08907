// Internal helpers of samplers/ (schedule.cpp, samplers.cpp, sigma_samplers.cpp); not part of the public API.
#pragma once
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "samplers/schedule.h"

namespace atelier::detail {

// numpy.round / Python round: half to even.
inline double round_half_even(double x) {
  double r = std::round(x);
  if (std::abs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
  return r;
}

// numpy.linspace(start, stop, n, endpoint) bit for bit (the reference schedules are built with it).
std::vector<double> np_linspace(double start, double stop, std::int64_t n, bool endpoint = true);

// The prediction part of a denoiser output: as is for C channels, the first half for 2C (learned sigma).
torch::Tensor drop_learned_sigma(const torch::Tensor& model_output, const torch::Tensor& x);
// Non-empty, strictly descending, inside [0, T).
void check_timesteps(const std::vector<std::int64_t>& timesteps, const NoiseSchedule& s, const char* sampler);

}  // namespace atelier::detail
