// Ref: huggingface/diffusers v0.42.1 src/diffusers/schedulers/scheduling_ddpm.py, scheduling_ddim.py,
//      scheduling_lcm.py; facebookresearch/DiT diffusion/gaussian_diffusion.py (p_mean_variance, p_sample).
// The sigma-space samplers (Euler, Euler ancestral, DPM-Solver++) are in sigma_samplers.cpp.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "samplers/sampler_util.h"
#include "samplers/samplers.h"

namespace atelier {

torch::Tensor timestep_batch(double t, const torch::Tensor& x) {
  return torch::full({x.size(0)}, t, x.options().dtype(torch::kFloat));
}

namespace detail {

torch::Tensor drop_learned_sigma(const torch::Tensor& model_output, const torch::Tensor& x) {
  if (model_output.dim() == x.dim() && model_output.size(1) == x.size(1)) return model_output;
  if (model_output.dim() == x.dim() && model_output.size(1) == 2 * x.size(1))
    return split_learned_sigma(model_output, x.size(1)).out;
  fail("denoiser output of shape ", model_output.sizes(), " for a sample of shape ", x.sizes(),
       ": expected the sample's channels (or twice them for a learned-sigma model)");
}

void check_timesteps(const std::vector<std::int64_t>& timesteps, const NoiseSchedule& s, const char* sampler) {
  if (timesteps.empty()) fail(sampler, ": empty timestep list");
  for (std::size_t i = 0; i < timesteps.size(); ++i) {
    if (timesteps[i] < 0 || timesteps[i] >= s.size())
      fail(sampler, ": timestep ", timesteps[i], " is outside the schedule's ", s.size(), " training steps");
    if (i > 0 && timesteps[i] >= timesteps[i - 1])
      fail(sampler, ": timesteps must be strictly descending, got ", timesteps[i - 1], " then ", timesteps[i]);
  }
}

}  // namespace detail

namespace {

torch::Tensor clip(const torch::Tensor& x0, bool on, double range) {
  return on ? x0.clamp(-range, range) : x0;
}

torch::Tensor require_noise(const torch::Tensor& noise, const torch::Tensor& x, const char* sampler) {
  if (!noise.defined() || noise.sizes() != x.sizes())
    fail(sampler, ": noise of shape ", noise.defined() ? noise.sizes() : at::IntArrayRef{}, " for a sample of shape ",
         x.sizes());
  return noise;
}

// abar at t_prev < 0 for DDIM and LCM ("final_alpha_cumprod").
double final_abar(const NoiseSchedule& s, std::int64_t t_prev, bool set_alpha_to_one) {
  if (t_prev >= 0) return s.abar(t_prev);
  return set_alpha_to_one ? 1.0 : s.abar(0);
}

}  // namespace

StepResult ddpm_step(const NoiseSchedule& s, const DDPMOptions& o, const torch::Tensor& model_output,
                     const torch::Tensor& x, std::int64_t t, std::int64_t t_prev, const torch::Tensor& noise) {
  torch::Tensor out = model_output, var_values;
  if (o.variance == DDPMVariance::learned_range) {
    auto split = split_learned_sigma(model_output, x.size(1));
    out = split.out, var_values = split.var_values;
  } else {
    out = detail::drop_learned_sigma(model_output, x);
  }
  double a_t = s.abar(t), a_prev = s.abar(t_prev);
  double alpha_t = a_t / a_prev, beta_t = 1.0 - alpha_t;  // of the (respaced) step t_prev -> t
  auto x0 = clip(to_x0_eps(o.prediction, out, x, a_t).x0, o.clip_sample, o.clip_range);
  // Posterior mean of q(x_{t_prev} | x_t, x0) (Ho et al. eq. 7).
  auto prev = (std::sqrt(a_prev) * beta_t / (1.0 - a_t)) * x0 + (std::sqrt(alpha_t) * (1.0 - a_prev) / (1.0 - a_t)) * x;
  if (t_prev < 0) return {prev, x0};
  require_noise(noise, x, "DDPM step");
  double posterior_var = std::max((1.0 - a_prev) / (1.0 - a_t) * beta_t, 1e-20);
  switch (o.variance) {
    case DDPMVariance::fixed_small: prev = prev + std::sqrt(posterior_var) * noise; break;
    case DDPMVariance::fixed_large: prev = prev + std::sqrt(beta_t) * noise; break;
    case DDPMVariance::learned_range: {
      auto frac = (var_values + 1.0) / 2.0;
      auto log_var = frac * std::log(beta_t) + (1.0 - frac) * std::log(posterior_var);
      prev = prev + torch::exp(0.5 * log_var) * noise;
      break;
    }
  }
  return {prev, x0};
}

torch::Tensor sample_ddpm(const NoiseSchedule& s, const DDPMOptions& o, const Denoiser& denoiser, torch::Tensor x,
                          const std::vector<std::int64_t>& timesteps, Rng& rng, const StepObserver& observe) {
  detail::check_timesteps(timesteps, s, "DDPM sampler");
  const auto n = static_cast<std::int64_t>(timesteps.size());
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t t = timesteps[i], t_prev = i + 1 < n ? timesteps[i + 1] : -1;
    auto out = denoiser(x, timestep_batch(static_cast<double>(t), x));
    auto noise = t_prev >= 0 ? rng.randn(x.sizes(), x.options()) : torch::Tensor();
    auto r = ddpm_step(s, o, out, x, t, t_prev, noise);
    x = r.prev_sample;
    if (observe) observe(i, n, x, r.x0);
  }
  return x;
}

StepResult ddim_step(const NoiseSchedule& s, const DDIMOptions& o, const torch::Tensor& model_output,
                     const torch::Tensor& x, std::int64_t t, std::int64_t t_prev, const torch::Tensor& noise) {
  double a_t = s.abar(t), a_prev = final_abar(s, t_prev, o.set_alpha_to_one);
  auto [x0, eps] = to_x0_eps(o.prediction, detail::drop_learned_sigma(model_output, x), x, a_t);
  x0 = clip(x0, o.clip_sample, o.clip_range);
  // Song et al. eq. 12 with sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).
  double std_t = o.eta * std::sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev));
  auto prev = std::sqrt(a_prev) * x0 + std::sqrt(std::max(1.0 - a_prev - std_t * std_t, 0.0)) * eps;
  if (o.eta > 0) prev = prev + std_t * require_noise(noise, x, "DDIM step");
  return {prev, x0};
}

torch::Tensor sample_ddim(const NoiseSchedule& s, const DDIMOptions& o, const Denoiser& denoiser, torch::Tensor x,
                          const std::vector<std::int64_t>& timesteps, Rng& rng, const StepObserver& observe) {
  detail::check_timesteps(timesteps, s, "DDIM sampler");
  const auto n = static_cast<std::int64_t>(timesteps.size());
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t t = timesteps[i], t_prev = i + 1 < n ? timesteps[i + 1] : -1;
    auto out = denoiser(x, timestep_batch(static_cast<double>(t), x));
    auto noise = o.eta > 0 ? rng.randn(x.sizes(), x.options()) : torch::Tensor();
    auto r = ddim_step(s, o, out, x, t, t_prev, noise);
    x = r.prev_sample;
    if (observe) observe(i, n, x, r.x0);
  }
  return x;
}

std::vector<std::int64_t> lcm_timesteps(std::int64_t T, std::int64_t n, std::int64_t original_steps) {
  if (original_steps < 1 || original_steps > T)
    fail("LCM original steps ", original_steps, ": must be in [1, ", T, "] (the training steps)");
  if (n < 1 || n > original_steps)
    fail("LCM inference steps ", n, ": must be in [1, ", original_steps, "] (the original steps)");
  std::int64_t k = T / original_steps;
  auto picks = detail::np_linspace(0.0, static_cast<double>(original_steps), n, /*endpoint=*/false);
  std::vector<std::int64_t> ts(n);
  for (std::int64_t i = 0; i < n; ++i) {
    auto j = static_cast<std::int64_t>(std::floor(picks[i]));  // index into the descending list
    ts[i] = (original_steps - j) * k - 1;
  }
  return ts;
}

StepResult lcm_step(const NoiseSchedule& s, const LCMOptions& o, const torch::Tensor& model_output,
                    const torch::Tensor& x, std::int64_t t, std::int64_t t_prev, const torch::Tensor& noise) {
  double a_t = s.abar(t);
  // Consistency-model boundary condition with sigma_data = 0.5.
  double st = static_cast<double>(t) * o.timestep_scaling;
  double c_skip = 0.25 / (st * st + 0.25), c_out = st / std::sqrt(st * st + 0.25);
  auto x0 = to_x0_eps(o.prediction, detail::drop_learned_sigma(model_output, x), x, a_t).x0;
  auto denoised = c_out * clip(x0, o.clip_sample, o.clip_range) + c_skip * x;
  if (!noise.defined()) return {denoised, denoised};
  double a_prev = final_abar(s, t_prev, o.set_alpha_to_one);
  auto prev = std::sqrt(a_prev) * denoised + std::sqrt(1.0 - a_prev) * require_noise(noise, x, "LCM step");
  return {prev, denoised};
}

torch::Tensor sample_lcm(const NoiseSchedule& s, const LCMOptions& o, const Denoiser& denoiser, torch::Tensor x,
                         const std::vector<std::int64_t>& timesteps, Rng& rng, const StepObserver& observe) {
  detail::check_timesteps(timesteps, s, "LCM sampler");
  const auto n = static_cast<std::int64_t>(timesteps.size());
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t t = timesteps[i], t_prev = i + 1 < n ? timesteps[i + 1] : -1;
    auto out = denoiser(x, timestep_batch(static_cast<double>(t), x));
    auto noise = t_prev >= 0 ? rng.randn(x.sizes(), x.options()) : torch::Tensor();
    auto r = lcm_step(s, o, out, x, t, t_prev, noise);
    x = r.prev_sample;
    if (observe) observe(i, n, x, r.x0);
  }
  return x;
}

}  // namespace atelier
