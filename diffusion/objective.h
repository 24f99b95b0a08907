// Training objectives of discrete-time Gaussian diffusion (DDPM / IDDPM, as DiT trains):
// q(x_t | x_0), targets for eps / v / x0 prediction, and the learned-range variance with the hybrid
// loss L = L_simple + L_vb (Nichol & Dhariwal 2021; DiT uses it with learn_sigma).
// Ref: facebookresearch/DiT diffusion/gaussian_diffusion.py (training_losses, _vb_terms_bpd).
#pragma once
#include <torch/torch.h>

#include <string>

#include "samplers/schedule.h"

namespace atelier {

class DiffusionObjective {
 public:
  DiffusionObjective(const NoiseSchedule& schedule, Prediction prediction, bool learn_sigma);

  std::int64_t num_timesteps() const { return betas_.size(0); }
  Prediction prediction() const { return prediction_; }
  bool learn_sigma() const { return learn_sigma_; }

  // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.   x0, noise [N, ...], t [N] int64.
  torch::Tensor q_sample(const torch::Tensor& x0, const torch::Tensor& t, const torch::Tensor& noise) const;
  torch::Tensor target(const torch::Tensor& x0, const torch::Tensor& t, const torch::Tensor& noise) const;

  struct Terms {
    torch::Tensor loss;  // [N] per-sample total
    torch::Tensor mse;   // [N]
    torch::Tensor vb;    // [N] (zeros without learn_sigma), in bits per dimension
  };
  // `model_output` is the network's output for x_t = q_sample(x0, t, noise): C channels, or 2C with
  // learn_sigma ([prediction | variance values in [-1, 1]]).
  Terms losses(const torch::Tensor& model_output, const torch::Tensor& x0, const torch::Tensor& t,
               const torch::Tensor& noise) const;

  // The model's x0 estimate from its output (any prediction type).
  torch::Tensor predict_x0(const torch::Tensor& model_output, const torch::Tensor& x_t, const torch::Tensor& t) const;

 private:
  torch::Tensor gather(const torch::Tensor& table, const torch::Tensor& t, const torch::Tensor& like) const;
  NoiseSchedule schedule_;
  torch::Tensor betas_, abar_, abar_prev_, posterior_variance_, posterior_log_variance_clipped_;
  torch::Tensor posterior_coef1_, posterior_coef2_;
  Prediction prediction_;
  bool learn_sigma_;
};

}  // namespace atelier
