// Ref: facebookresearch/DiT diffusion/gaussian_diffusion.py and diffusion/diffusion_utils.py.
#include "diffusion/objective.h"

#include <cmath>

#include "core/error.h"

namespace atelier {

namespace {
torch::Tensor normal_kl(const torch::Tensor& mean1, const torch::Tensor& logvar1, const torch::Tensor& mean2,
                        const torch::Tensor& logvar2) {
  return 0.5 *
         (-1.0 + logvar2 - logvar1 + torch::exp(logvar1 - logvar2) + (mean1 - mean2).pow(2) * torch::exp(-logvar2));
}

torch::Tensor approx_standard_normal_cdf(const torch::Tensor& x) {
  return 0.5 * (1.0 + torch::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x.pow(3))));
}

// log-likelihood of x (data in [-1, 1], 8-bit bins) under a discretised Gaussian.
torch::Tensor discretized_gaussian_log_likelihood(const torch::Tensor& x, const torch::Tensor& means,
                                                  const torch::Tensor& log_scales) {
  auto centered = x - means;
  auto inv_stdv = torch::exp(-log_scales);
  auto cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0));
  auto cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
  auto log_cdf_plus = torch::log(cdf_plus.clamp_min(1e-12));
  auto log_one_minus_cdf_min = torch::log((1.0 - cdf_min).clamp_min(1e-12));
  auto log_cdf_delta = torch::log((cdf_plus - cdf_min).clamp_min(1e-12));
  return torch::where(x < -0.999, log_cdf_plus, torch::where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta));
}

torch::Tensor mean_flat(const torch::Tensor& x) {
  std::vector<std::int64_t> dims;
  for (std::int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  return x.mean(dims);
}
}  // namespace

DiffusionObjective::DiffusionObjective(const NoiseSchedule& schedule, Prediction prediction, bool learn_sigma)
    : schedule_(schedule), betas_(schedule.betas), prediction_(prediction), learn_sigma_(learn_sigma) {
  if (betas_.dim() != 1 || betas_.size(0) < 2) fail("noise schedule needs at least 2 betas");
  auto alphas = 1.0 - betas_;
  abar_ = torch::cumprod(alphas, 0);
  abar_prev_ = torch::cat({torch::ones({1}, abar_.options()), abar_.narrow(0, 0, abar_.size(0) - 1)});
  posterior_variance_ = betas_ * (1.0 - abar_prev_) / (1.0 - abar_);
  posterior_log_variance_clipped_ = torch::log(
      torch::cat({posterior_variance_.narrow(0, 1, 1), posterior_variance_.narrow(0, 1, abar_.size(0) - 1)}));
  posterior_coef1_ = betas_ * torch::sqrt(abar_prev_) / (1.0 - abar_);
  posterior_coef2_ = (1.0 - abar_prev_) * torch::sqrt(alphas) / (1.0 - abar_);
}

torch::Tensor DiffusionObjective::gather(const torch::Tensor& table, const torch::Tensor& t,
                                         const torch::Tensor& like) const {
  auto v = table.to(like.device()).index_select(0, t.to(torch::kLong).to(like.device())).to(like.scalar_type());
  std::vector<std::int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return v.view(shape);
}

torch::Tensor DiffusionObjective::q_sample(const torch::Tensor& x0, const torch::Tensor& t,
                                           const torch::Tensor& noise) const {
  return add_noise(schedule_, x0, noise, t);
}

torch::Tensor DiffusionObjective::target(const torch::Tensor& x0, const torch::Tensor& t,
                                         const torch::Tensor& noise) const {
  return prediction_target(prediction_, x0, noise, schedule_.abar(t));
}

torch::Tensor DiffusionObjective::predict_x0(const torch::Tensor& out, const torch::Tensor& x_t,
                                             const torch::Tensor& t) const {
  return to_x0_eps(prediction_, out.narrow(1, 0, x_t.size(1)), x_t, schedule_.abar(t)).x0;
}

DiffusionObjective::Terms DiffusionObjective::losses(const torch::Tensor& model_output, const torch::Tensor& x0,
                                                     const torch::Tensor& t, const torch::Tensor& noise) const {
  const auto c = x0.size(1);
  if (model_output.size(1) != (learn_sigma_ ? 2 * c : c))
    fail("model output has ", model_output.size(1), " channels, expected ", learn_sigma_ ? 2 * c : c);
  Terms terms;
  auto pred = model_output.narrow(1, 0, c);
  terms.mse = mean_flat((target(x0, t, noise) - pred).pow(2));
  if (!learn_sigma_) {
    terms.vb = torch::zeros_like(terms.mse);
    terms.loss = terms.mse;
    return terms;
  }
  // VB term with the mean frozen: only the variance head learns from it.
  auto x_t = q_sample(x0, t, noise);
  auto frozen = torch::cat({pred.detach(), model_output.narrow(1, c, c)}, 1);
  auto frac = (model_output.narrow(1, c, c) + 1.0) / 2.0;
  auto min_log = gather(posterior_log_variance_clipped_, t, x0);
  auto max_log = gather(torch::log(betas_), t, x0);
  auto model_log_variance = frac * max_log + (1.0 - frac) * min_log;
  auto pred_x0 = predict_x0(frozen, x_t, t);
  auto model_mean = gather(posterior_coef1_, t, x0) * pred_x0 + gather(posterior_coef2_, t, x0) * x_t;
  auto true_mean = gather(posterior_coef1_, t, x0) * x0 + gather(posterior_coef2_, t, x0) * x_t;
  auto true_log_var = gather(posterior_log_variance_clipped_, t, x0);
  auto kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_variance)) / std::log(2.0);
  auto nll = -mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance)) / std::log(2.0);
  terms.vb = torch::where(t.to(kl.device()) == 0, nll, kl);
  terms.loss = terms.mse + terms.vb;
  return terms;
}

}  // namespace atelier
