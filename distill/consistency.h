// Consistency distillation in the LCM style (Luo et al., 2023; diffusers' train_lcm_distill scripts): a
// student f(x_t, t) = c_skip(t) x_t + c_out(t) x0_theta(x_t, t) learns to map every point of the teacher's
// guided probability-flow ODE to the same clean image, by matching its EMA target network one teacher
// DDIM step further along the ODE. The pieces are free functions so tests can check them one by one; the
// `distill_steps` job (distill/distill_steps.h) runs them.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/job.h"
#include "data/shapes.h"
#include "diffusion/dit.h"
#include "diffusion/generate.h"
#include "samplers/schedule.h"

namespace atelier {

class Rng;

// The boundary-condition scalings of the LCM scheduler at integer timesteps t ([N]): with s = scaling * t,
// c_skip = 0.25 / (s^2 + 0.25) and c_out = s / sqrt(s^2 + 0.25), so f(x, 0) = x exactly. float64 [N].
struct ConsistencyScalings {
  torch::Tensor c_skip, c_out;
};
ConsistencyScalings consistency_scalings(const torch::Tensor& t, double timestep_scaling = 10.0);

// f(x_t, t) from the network's raw output (learned-sigma channels dropped) in its prediction type.
torch::Tensor consistency_function(const torch::Tensor& model_output, const torch::Tensor& x_t, const torch::Tensor& t,
                                   const NoiseSchedule& schedule, Prediction prediction,
                                   double timestep_scaling = 10.0);

// The skipping-step grid: `original_steps` timesteps (i + 1) * k - 1 with k = T / original_steps (LCM's
// 19, 39, ..., 999 for 50 of 1000). A sampled index i gives t = grid[i] and t_prev = max(t - k, 0).
struct SkippingSteps {
  std::int64_t num_train_timesteps = 1000;
  std::int64_t original_steps = 50;
  std::int64_t stride() const { return num_train_timesteps / original_steps; }
  // t for indices [N] int64.
  torch::Tensor timesteps(const torch::Tensor& index) const { return (index + 1) * stride() - 1; }
  torch::Tensor previous(const torch::Tensor& t) const { return (t - stride()).clamp_min(0); }
};

// One DDIM step of the teacher with classifier-free guidance folded in: the conditional and null-label
// passes as one batch, guided x0 and eps = uncond + w (cond - uncond), then
// x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps. No gradients.
torch::Tensor teacher_ddim_step(DiT& teacher, const NoiseSchedule& schedule, Prediction prediction,
                                const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& t_prev,
                                const torch::Tensor& labels, double guidance);

// Pseudo-Huber distance sqrt((a - b)^2 + c^2) - c per element, averaged per sample ([N]); c = 0 is L1-like,
// a large c approaches L2 / (2c). With c <= 0 the plain squared error is used.
torch::Tensor pseudo_huber(const torch::Tensor& a, const torch::Tensor& b, double c);

struct ConsistencySettings {
  SkippingSteps steps;
  double guidance = 4.0;
  double huber_c = 0.001;  // <= 0: squared error
  double timestep_scaling = 10.0;
};

// The distillation loss on a batch of clean images with labels: index i, then noise, drawn from `rng` in
// that order; the student's f at (x_t, t) against the target network's f at the teacher's x_{t_prev}
// (target and teacher without gradients). Returns the per-sample loss [N]. In a data-parallel run `data`
// holds this rank's rows of the global batch: i and the noise are drawn for the global batch and the
// rank's rows kept (core/distributed.h).
torch::Tensor consistency_loss(DiT& student, DiT& target, DiT& teacher, const NoiseSchedule& schedule,
                               Prediction prediction, const shapes::Batch& data, const ConsistencySettings& settings,
                               Rng& rng, const Shard& shard = {});

// How a few-step model samples: the LCM sampler at `steps` steps with no guidance pass (guidance is
// folded into a distilled student).
SamplerSettings few_step_sampler(std::int64_t steps);

}  // namespace atelier
