// Samplers as free functions over a denoiser callback (STYLE.md 7): DDPM ancestral, DDIM, Euler, Euler
// ancestral, DPM-Solver++(2M) and LCM. Each has a per-step function (the update rule of the matching
// diffusers scheduler's step(), with any noise passed in so parity is exact) and a sampling loop.
//
// Ref: huggingface/diffusers v0.42.1 src/diffusers/schedulers/ scheduling_ddpm.py, scheduling_ddim.py,
//      scheduling_euler_discrete.py, scheduling_euler_ancestral_discrete.py, scheduling_dpmsolver_multistep.py,
//      scheduling_lcm.py; facebookresearch/DiT diffusion/gaussian_diffusion.py (p_sample, learned range).
//
// The denoiser is called as diffusers' pipelines call the network: with the sample the network expects
// (Euler family: x / sqrt(sigma^2 + 1)) and t = the ORIGINAL timestep as an [N] float tensor (fractional
// for Euler's linspace spacing). It returns the raw output in the prediction type the options name;
// guidance, conditioning and adapter scales are folded into it by the caller. An output with twice the
// sample's channels is a learned-sigma output: DDPM's learned_range uses the second half, every other
// sampler drops it.
//
// Loops take the starting sample x: randn * 1 for DDPM/DDIM/DPM++/LCM, randn * steps.init_noise_sigma
// for the Euler family (or a noised image for image-to-image with a shortened timestep list), and
// draw their noise from the Rng in diffusers' order (same seed, same noise as a diffusers loop that
// passes a CPU torch.Generator with that seed).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "samplers/schedule.h"

namespace atelier {

// x: [N, C, ...]; t: [N] float timesteps in 0..T-1. Returns the raw network output.
using Denoiser = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& t)>;
// Called after each step with the step index, the step count, the new sample and the current x0 estimate
// (progress, previews; throw to cancel).
using StepObserver =
    std::function<void(std::int64_t step, std::int64_t steps, const torch::Tensor& x, const torch::Tensor& x0)>;

struct StepResult {
  torch::Tensor prev_sample;  // the sample at the next (less noisy) timestep
  torch::Tensor x0;           // the x0 estimate used (LCM: the consistency output, "denoised")
};

// [N] float timesteps for the denoiser, on x's device.
torch::Tensor timestep_batch(double t, const torch::Tensor& x);

// ---- DDPM ancestral (DDPMScheduler; DiT p_sample) -----------------------------------------------------

enum class DDPMVariance {
  fixed_small,   // posterior variance (1 - abar_prev) / (1 - abar_t) * beta_t
  fixed_large,   // beta_t
  learned_range  // DiT/IDDPM: output [eps | v], frac = (v + 1) / 2, log var = frac log beta_t + (1 - frac) log
                 // posterior
};
struct DDPMOptions {
  Prediction prediction = Prediction::eps;
  DDPMVariance variance = DDPMVariance::fixed_small;
  bool clip_sample = false;  // clamp x0 to [-clip_range, clip_range] (diffusers' default is true, DiT's false)
  double clip_range = 1.0;
};
// x_t -> x_{t_prev}, with beta_t = 1 - abar_t / abar_prev, so any descending list of kept timesteps walks the
// respaced chain. Noise ([N, C, ...] standard normal) is added unless t_prev < 0 (the last step).
StepResult ddpm_step(const NoiseSchedule& s, const DDPMOptions& o, const torch::Tensor& model_output,
                     const torch::Tensor& x, std::int64_t t, std::int64_t t_prev, const torch::Tensor& noise);
// timesteps: descending original timesteps (spaced_timesteps, or Respacing::sampling_timesteps for DiT).
torch::Tensor sample_ddpm(const NoiseSchedule& s, const DDPMOptions& o, const Denoiser& denoiser, torch::Tensor x,
                          const std::vector<std::int64_t>& timesteps, Rng& rng, const StepObserver& observe = {});

// ---- DDIM (DDIMScheduler) ----------------------------------------------------------------------------------

struct DDIMOptions {
  Prediction prediction = Prediction::eps;
  double eta = 0.0;              // 0: deterministic DDIM, 1: DDPM-like variance
  bool set_alpha_to_one = true;  // abar at t_prev < 0: 1, or abar_0 (SD configs: false)
  bool clip_sample = false;
  double clip_range = 1.0;
};
// x_t -> x_{t_prev}; noise is used when eta > 0.
StepResult ddim_step(const NoiseSchedule& s, const DDIMOptions& o, const torch::Tensor& model_output,
                     const torch::Tensor& x, std::int64_t t, std::int64_t t_prev, const torch::Tensor& noise);
// Steps to the next timestep of the list (-1 after the last). diffusers steps to t - T/n instead, which is
// the same for leading and trailing spacing when n divides T, and a timestep off the list otherwise.
torch::Tensor sample_ddim(const NoiseSchedule& s, const DDIMOptions& o, const Denoiser& denoiser, torch::Tensor x,
                          const std::vector<std::int64_t>& timesteps, Rng& rng, const StepObserver& observe = {});

// ---- Euler and Euler ancestral (Euler[Ancestral]DiscreteScheduler) -------------------------------------

struct SigmaSteps {
  std::vector<double> timesteps;  // [n] model timesteps; fractional for linspace, rounded to float32 like diffusers
  std::vector<double> sigmas;     // [n + 1] sigma at each timestep (linear interpolation), then 0
  double init_noise_sigma = 1.0;  // max sigma (linspace, trailing) or sqrt(max^2 + 1) (leading)
};
// EulerDiscreteScheduler.set_timesteps(n) (diffusers' default spacing for Euler is linspace).
SigmaSteps sigma_steps(const NoiseSchedule& s, std::int64_t n, Spacing spacing = Spacing::linspace,
                       std::int64_t steps_offset = 0);

// The x0 estimate in sigma space (x = x0 + sigma * eps): eps -> x - sigma out;
// v -> out * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1); x0 -> out.
torch::Tensor sigma_x0(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x, double sigma);
// x += (x - x0) / sigma * (sigma_next - sigma).
StepResult euler_step(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x, double sigma,
                      double sigma_next);
torch::Tensor sample_euler(Prediction p, const Denoiser& denoiser, torch::Tensor x, const SigmaSteps& steps,
                           const StepObserver& observe = {});
// sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2), sigma_down = sqrt(sigma_next^2 - sigma_up^2):
// x += (x - x0) / sigma * (sigma_down - sigma) + noise * sigma_up.
StepResult euler_ancestral_step(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x, double sigma,
                                double sigma_next, const torch::Tensor& noise);
torch::Tensor sample_euler_ancestral(Prediction p, const Denoiser& denoiser, torch::Tensor x, const SigmaSteps& steps,
                                     Rng& rng, const StepObserver& observe = {});

// ---- DPM-Solver++(2M) (DPMSolverMultistepScheduler: dpmsolver++, order 2, midpoint, final sigma 0) --------

// DPMSolverMultistepScheduler.set_timesteps(n): like spaced_timesteps but over n + 1 points with the last
// dropped for linspace and leading (so linspace never reaches t = 0).
std::vector<std::int64_t> dpm_solver_timesteps(std::int64_t T, std::int64_t n, Spacing spacing = Spacing::linspace,
                                               std::int64_t steps_offset = 0);
// One update from sigma to sigma_next (variance-exploding sigmas; x in the variance-preserving scaling the
// model sees) given the data prediction x0 at sigma. With x0_prev (the prediction at sigma_prev, the step
// before) it is the second-order multistep update, without it (or when sigma_next == 0) first order.
torch::Tensor dpmpp_2m_step(const torch::Tensor& x, const torch::Tensor& x0, double sigma, double sigma_next,
                            const torch::Tensor& x0_prev = {}, double sigma_prev = 0.0);
// First step first order, then second order, last step first order (lower_order_final) to sigma 0.
torch::Tensor sample_dpmpp_2m(const NoiseSchedule& s, Prediction p, const Denoiser& denoiser, torch::Tensor x,
                              const std::vector<std::int64_t>& timesteps, const StepObserver& observe = {});

// ---- LCM (LCMScheduler) -------------------------------------------------------------------------------------

struct LCMOptions {
  Prediction prediction = Prediction::eps;
  std::int64_t original_steps = 50;  // the distillation schedule: (1..original_steps) * (T / original_steps) - 1
  double timestep_scaling = 10.0;    // c_skip = 0.25 / ((s t)^2 + 0.25), c_out = s t / sqrt((s t)^2 + 0.25)
  bool set_alpha_to_one = true;
  bool clip_sample = false;
  double clip_range = 1.0;
};
// n of the original_steps distillation timesteps, descending: floor(linspace(0, original_steps, n, endpoint=False))
// picks (4 steps of 50: 999 759 499 259).
std::vector<std::int64_t> lcm_timesteps(std::int64_t T, std::int64_t n, std::int64_t original_steps = 50);
// denoised = c_out x0 + c_skip x; re-noised to t_prev with noise (sqrt(abar_prev) denoised + sqrt(1-abar_prev) noise)
// when noise is defined, else returned as is (the last step).
StepResult lcm_step(const NoiseSchedule& s, const LCMOptions& o, const torch::Tensor& model_output,
                    const torch::Tensor& x, std::int64_t t, std::int64_t t_prev, const torch::Tensor& noise);
torch::Tensor sample_lcm(const NoiseSchedule& s, const LCMOptions& o, const Denoiser& denoiser, torch::Tensor x,
                         const std::vector<std::int64_t>& timesteps, Rng& rng, const StepObserver& observe = {});

}  // namespace atelier
