// Samplers that step in sigma space: Euler, Euler ancestral, DPM-Solver++(2M).
// Ref: huggingface/diffusers v0.42.1 src/diffusers/schedulers/scheduling_euler_discrete.py,
//      scheduling_euler_ancestral_discrete.py, scheduling_dpmsolver_multistep.py.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "samplers/sampler_util.h"
#include "samplers/samplers.h"

namespace atelier {
namespace {

// Steps run in at least float32 (diffusers upcasts the sample); results go back to the sample's dtype.
torch::Tensor upcast(const torch::Tensor& x) {
  return x.scalar_type() == torch::kDouble ? x : x.to(torch::kFloat);
}

// numpy.interp(t, arange(T), table) for a [T] float64 table.
double interp(double t, const torch::Tensor& table) {
  const double* fp = table.data_ptr<double>();
  const std::int64_t last = table.size(0) - 1;
  if (t <= 0.0) return fp[0];
  if (t >= static_cast<double>(last)) return fp[last];
  auto j = static_cast<std::int64_t>(std::floor(t));
  if (t == static_cast<double>(j)) return fp[j];
  return (fp[j + 1] - fp[j]) * (t - static_cast<double>(j)) + fp[j];
}

void check_sigma_steps(const SigmaSteps& steps, const char* sampler) {
  if (steps.timesteps.empty() || steps.sigmas.size() != steps.timesteps.size() + 1)
    fail(sampler, ": ", steps.timesteps.size(), " timesteps need ", steps.timesteps.size() + 1, " sigmas, got ",
         steps.sigmas.size());
  for (std::size_t i = 0; i + 1 < steps.sigmas.size(); ++i)
    if (!(steps.sigmas[i] > 0.0)) fail(sampler, ": sigma[", i, "] = ", steps.sigmas[i], " must be > 0");
}

}  // namespace

SigmaSteps sigma_steps(const NoiseSchedule& s, std::int64_t n, Spacing spacing, std::int64_t steps_offset) {
  SigmaSteps r;
  const std::int64_t T = s.size();
  if (spacing == Spacing::linspace) {
    if (n < 1 || n > T) fail("inference steps ", n, ": must be in [1, ", T, "] (the training steps)");
    auto y = detail::np_linspace(0.0, static_cast<double>(T - 1), n);
    for (std::int64_t i = n - 1; i >= 0; --i) r.timesteps.push_back(static_cast<float>(y[i]));
  } else {
    for (std::int64_t t : spaced_timesteps(T, n, spacing, steps_offset)) r.timesteps.push_back(static_cast<double>(t));
  }
  auto table = s.sigmas().contiguous();
  for (double t : r.timesteps) r.sigmas.push_back(interp(t, table));
  r.sigmas.push_back(0.0);
  double max_sigma = *std::max_element(r.sigmas.begin(), r.sigmas.end());
  r.init_noise_sigma = spacing == Spacing::leading ? std::sqrt(max_sigma * max_sigma + 1.0) : max_sigma;
  return r;
}

torch::Tensor sigma_x0(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x, double sigma) {
  switch (p) {
    case Prediction::eps: return x - sigma * model_output;
    case Prediction::v: return model_output * (-sigma / std::sqrt(sigma * sigma + 1.0)) + x / (sigma * sigma + 1.0);
    case Prediction::x0: return model_output;
  }
  fail("unknown prediction type");
}

StepResult euler_step(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x, double sigma,
                      double sigma_next) {
  auto xs = upcast(x);
  auto x0 = sigma_x0(p, detail::drop_learned_sigma(model_output, x), xs, sigma);
  auto derivative = (xs - x0) / sigma;
  return {(xs + derivative * (sigma_next - sigma)).to(x.scalar_type()), x0};
}

torch::Tensor sample_euler(Prediction p, const Denoiser& denoiser, torch::Tensor x, const SigmaSteps& steps,
                           const StepObserver& observe) {
  check_sigma_steps(steps, "Euler sampler");
  const auto n = static_cast<std::int64_t>(steps.timesteps.size());
  for (std::int64_t i = 0; i < n; ++i) {
    double sigma = steps.sigmas[i];
    auto out = denoiser(x / std::sqrt(sigma * sigma + 1.0), timestep_batch(steps.timesteps[i], x));
    auto r = euler_step(p, out, x, sigma, steps.sigmas[i + 1]);
    x = r.prev_sample;
    if (observe) observe(i, n, x, r.x0);
  }
  return x;
}

StepResult euler_ancestral_step(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x, double sigma,
                                double sigma_next, const torch::Tensor& noise) {
  if (!noise.defined() || noise.sizes() != x.sizes())
    fail("Euler ancestral step: noise of shape ", noise.defined() ? noise.sizes() : at::IntArrayRef{},
         " for a sample of shape ", x.sizes());
  auto xs = upcast(x);
  auto x0 = sigma_x0(p, detail::drop_learned_sigma(model_output, x), xs, sigma);
  double sn2 = sigma_next * sigma_next;
  double sigma_up = std::sqrt(sn2 * (sigma * sigma - sn2) / (sigma * sigma));
  double sigma_down = std::sqrt(std::max(sn2 - sigma_up * sigma_up, 0.0));
  auto derivative = (xs - x0) / sigma;
  auto prev = xs + derivative * (sigma_down - sigma) + noise * sigma_up;
  return {prev.to(x.scalar_type()), x0};
}

torch::Tensor sample_euler_ancestral(Prediction p, const Denoiser& denoiser, torch::Tensor x, const SigmaSteps& steps,
                                     Rng& rng, const StepObserver& observe) {
  check_sigma_steps(steps, "Euler ancestral sampler");
  const auto n = static_cast<std::int64_t>(steps.timesteps.size());
  for (std::int64_t i = 0; i < n; ++i) {
    double sigma = steps.sigmas[i];
    auto out = denoiser(x / std::sqrt(sigma * sigma + 1.0), timestep_batch(steps.timesteps[i], x));
    auto noise = rng.randn(x.sizes(), x.options());  // drawn on every step, the last included (diffusers)
    auto r = euler_ancestral_step(p, out, x, sigma, steps.sigmas[i + 1], noise);
    x = r.prev_sample;
    if (observe) observe(i, n, x, r.x0);
  }
  return x;
}

std::vector<std::int64_t> dpm_solver_timesteps(std::int64_t T, std::int64_t n, Spacing spacing,
                                               std::int64_t steps_offset) {
  if (n < 1 || n >= T) fail("DPM-Solver inference steps ", n, ": must be in [1, ", T - 1, "]");
  std::vector<std::int64_t> ts;
  switch (spacing) {
    case Spacing::trailing: return spaced_timesteps(T, n, spacing, steps_offset);
    case Spacing::leading: {
      std::int64_t ratio = T / (n + 1);
      for (std::int64_t i = n; i >= 1; --i) ts.push_back(i * ratio + steps_offset);
      return ts;
    }
    case Spacing::linspace: {
      auto y = detail::np_linspace(0.0, static_cast<double>(T - 1), n + 1);
      for (std::int64_t i = n; i >= 1; --i) ts.push_back(static_cast<std::int64_t>(detail::round_half_even(y[i])));
      return ts;
    }
  }
  return ts;
}

torch::Tensor dpmpp_2m_step(const torch::Tensor& x, const torch::Tensor& x0, double sigma, double sigma_next,
                            const torch::Tensor& x0_prev, double sigma_prev) {
  if (sigma_next == 0.0) return x0.to(x.scalar_type());  // first order to sigma 0 lands on x0
  // VP coefficients of a VE sigma: alpha = 1 / sqrt(sigma^2 + 1), sigma_vp = sigma alpha; lambda = -log(sigma).
  auto alpha = [](double s) { return 1.0 / std::sqrt(s * s + 1.0); };
  double alpha_t = alpha(sigma_next), ratio = sigma_next * alpha_t / (sigma * alpha(sigma));
  double h = std::log(sigma) - std::log(sigma_next);  // lambda_t - lambda_s0
  double c = alpha_t * std::expm1(-h);
  auto xs = upcast(x);
  if (!x0_prev.defined()) return (ratio * xs - c * x0).to(x.scalar_type());
  double r0 = (std::log(sigma_prev) - std::log(sigma)) / h;  // h_0 / h
  auto d1 = (1.0 / r0) * (x0 - x0_prev);
  return (ratio * xs - c * x0 - 0.5 * c * d1).to(x.scalar_type());
}

torch::Tensor sample_dpmpp_2m(const NoiseSchedule& s, Prediction p, const Denoiser& denoiser, torch::Tensor x,
                              const std::vector<std::int64_t>& timesteps, const StepObserver& observe) {
  detail::check_timesteps(timesteps, s, "DPM-Solver++(2M) sampler");
  const auto n = static_cast<std::int64_t>(timesteps.size());
  torch::Tensor x0_prev;
  double sigma_prev = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t t = timesteps[i];
    double sigma = s.sigma(t), sigma_next = i + 1 < n ? s.sigma(timesteps[i + 1]) : 0.0;
    auto out = detail::drop_learned_sigma(denoiser(x, timestep_batch(static_cast<double>(t), x)), x);
    auto x0 = to_x0_eps(p, out, x, s.abar(t)).x0;
    x = dpmpp_2m_step(x, x0, sigma, sigma_next, x0_prev, sigma_prev);
    x0_prev = x0, sigma_prev = sigma;
    if (observe) observe(i, n, x, x0);
  }
  return x;
}

}  // namespace atelier
