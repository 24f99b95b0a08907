// Discrete diffusion noise schedules, the timestep lists samplers walk, DiT/IDDPM respacing and the
// conversions between prediction types.
//
// Ref: huggingface/diffusers v0.42.1 src/diffusers/schedulers/ (betas, set_timesteps spacings);
//      facebookresearch/DiT diffusion/gaussian_diffusion.py (get_named_beta_schedule),
//      diffusion/respace.py (space_timesteps, SpacedDiffusion).
//
// Conventions: t is an index into the T training steps, 0 (least noise) .. T-1 (most noise);
// abar_t = prod_{s<=t} (1 - beta_s); x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps;
// sigma_t = sqrt((1 - abar_t) / abar_t) is the same point in the variance-exploding scaling x_t / sqrt(abar_t).
// Everything is computed in float64; coefficients meet tensors as double scalars.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace atelier {

// What the network predicts (diffusers prediction_type "epsilon" | "v_prediction" | "sample").
enum class Prediction { eps, v, x0 };
Prediction prediction_by_name(std::string_view name);  // "eps"|"epsilon", "v"|"v_prediction", "x0"|"sample"
std::string_view prediction_name(Prediction p);

struct NoiseSchedule {
  torch::Tensor betas;           // [T] float64, CPU
  torch::Tensor alphas_cumprod;  // [T] float64, CPU

  std::int64_t size() const { return betas.size(0); }  // T
  double abar(std::int64_t t) const;                   // t < 0 reads as 1 (the clean end of the chain)
  double sigma(std::int64_t t) const;                  // sqrt((1 - abar_t) / abar_t)
  torch::Tensor sigmas() const;                        // [T] float64
  torch::Tensor abar(const torch::Tensor& t) const;    // [N] integer timesteps -> [N] float64, on t's device

  // Checks 0 < beta <= 1 and computes the cumulative product.
  static NoiseSchedule from_betas(torch::Tensor betas);
  // DiT/IDDPM "linear": linspace(1e-4, 0.02) scaled by 1000/T (so T = 1000 is Ho et al. and diffusers'
  // default DDPM schedule).
  static NoiseSchedule linear(std::int64_t T = 1000);
  // diffusers "linear" with explicit ends (no 1000/T scaling).
  static NoiseSchedule linear(std::int64_t T, double beta_start, double beta_end);
  // Stable Diffusion: linspace(sqrt(beta_start), sqrt(beta_end), T)^2.
  static NoiseSchedule scaled_linear(std::int64_t T = 1000, double beta_start = 0.00085, double beta_end = 0.012);
  // Nichol & Dhariwal cosine (diffusers "squaredcos_cap_v2"): alpha_bar(s) = cos((s + 0.008) / 1.008 * pi/2)^2,
  // beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta).
  static NoiseSchedule cosine(std::int64_t T = 1000, double max_beta = 0.999);
  // "linear" (DiT scaling) | "scaled_linear" | "cosine" (alias "squaredcos_cap_v2").
  static NoiseSchedule by_name(std::string_view name, std::int64_t T = 1000);
};

// ---- Inference timesteps (descending original indices) ----------------------------------------------------

// diffusers "timestep_spacing" (Lin et al. 2023, Table 2).
enum class Spacing { leading, trailing, linspace };
Spacing spacing_by_name(std::string_view name);  // "leading" | "trailing" | "linspace"

// DDPMScheduler / DDIMScheduler.set_timesteps(n) for T training steps:
//   leading:  arange(n) * (T / n), reversed, + steps_offset   (SD 1.x configs use steps_offset 1)
//   trailing: round(arange(T, 0, -T / n)) - 1                 (n = 4: 999 749 499 249)
//   linspace: round(linspace(0, T - 1, n)), reversed
// Unlike diffusers, trailing always yields n steps: numpy's arange gives n + 1 for some n (61, 103, ...)
// and diffusers then ends the list with timestep -1.
std::vector<std::int64_t> spaced_timesteps(std::int64_t T, std::int64_t n, Spacing spacing,
                                           std::int64_t steps_offset = 0);

// ---- DiT / IDDPM respacing -------------------------------------------------------------------------------

// space_timesteps(T, spec): the kept original timesteps, ascending. spec is "250" (evenly strided, both ends
// kept), "10,15,20" (counts per equal section of the T steps), "ddim50" (the DDIM paper's integer stride) or
// "" (all T steps).
std::vector<std::int64_t> space_timesteps(std::int64_t T, std::string_view spec);

// SpacedDiffusion: a K-step schedule over the kept timesteps with beta_i = 1 - abar_{k_i} / abar_{k_{i-1}}
// (so its abar_i equals the base abar_{k_i}). A network is always called with the ORIGINAL timestep
// timestep_map[i], never with i.
struct Respacing {
  std::vector<std::int64_t> timestep_map;  // [K] kept original timesteps, ascending
  NoiseSchedule schedule;                  // K steps
  // The kept timesteps in sampling order (descending): what sample_ddpm/sample_ddim take with the BASE schedule,
  // which is the same chain as walking `schedule`.
  std::vector<std::int64_t> sampling_timesteps() const;
};
Respacing respace(const NoiseSchedule& base, std::string_view spec);

// ---- Prediction types --------------------------------------------------------------------------------------

struct X0Eps {
  torch::Tensor x0, eps;
};
// Given the raw model output at x_t (abar = abar_t): eps -> x0 = (x_t - sqrt(1-abar) out) / sqrt(abar);
// v = sqrt(abar) eps - sqrt(1-abar) x0 -> x0 = sqrt(abar) x_t - sqrt(1-abar) out,
// eps = sqrt(abar) out + sqrt(1-abar) x_t; x0 -> eps = (x_t - sqrt(abar) x0) / sqrt(1-abar).
X0Eps to_x0_eps(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x_t, double abar);
// Per-sample abar: [N] (any float dtype), broadcast over the other dimensions of x_t.
X0Eps to_x0_eps(Prediction p, const torch::Tensor& model_output, const torch::Tensor& x_t, const torch::Tensor& abar);
// The regression target of a prediction type for x_t built from (x0, eps): eps, x0 or v. abar: [N].
torch::Tensor prediction_target(Prediction p, const torch::Tensor& x0, const torch::Tensor& eps,
                                const torch::Tensor& abar);
// q(x_t | x0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t: [N] integer timesteps (diffusers add_noise).
torch::Tensor add_noise(const NoiseSchedule& s, const torch::Tensor& x0, const torch::Tensor& noise,
                        const torch::Tensor& t);

// Learned-sigma outputs (DiT, IDDPM): [N, 2C, ...] = [prediction | variance values in [-1, 1]].
struct LearnedSigma {
  torch::Tensor out, var_values;  // [N, C, ...] each
};
LearnedSigma split_learned_sigma(const torch::Tensor& model_output, std::int64_t channels);

}  // namespace atelier
