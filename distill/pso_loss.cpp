// Ref: Miao et al., "Tuning Timestep-Distilled Diffusion Model Using Pairwise Sample Optimization" (ICLR 2025),
// Eq. for the offline PSO objective and its hinge variant with the prior term.
#include "distill/pso_loss.h"

#include "core/error.h"

namespace atelier {

torch::Tensor weighted_x0_error(const torch::Tensor& x0_hat, const torch::Tensor& x0, const torch::Tensor& abar) {
  if (x0_hat.sizes() != x0.sizes()) fail("weighted_x0_error: shapes ", x0_hat.sizes(), " and ", x0.sizes(), " differ");
  if (abar.dim() != 1 || abar.size(0) != x0.size(0))
    fail("weighted_x0_error: abar must be [", x0.size(0), "], got ", abar.sizes());
  auto snr = (abar / (1 - abar)).to(x0.device(), torch::kFloat);
  return snr * (x0_hat.to(torch::kFloat) - x0.to(torch::kFloat)).pow(2).flatten(1).mean(1);
}

torch::Tensor pso_loss(const PsoLossSettings& s, const torch::Tensor& winner, const torch::Tensor& loser,
                       const torch::Tensor& winner_ref, const torch::Tensor& loser_ref) {
  auto d = winner - s.loser_weight * loser;
  if (s.loss == PsoLoss::Hinge) return torch::relu(1 + s.beta * d) + s.prior_weight * loser;
  if (!winner_ref.defined() || !loser_ref.defined()) fail("the logistic PSO loss needs the reference model's errors");
  auto d_ref = winner_ref - s.loser_weight * loser_ref;
  return -torch::log_sigmoid(s.beta * (d_ref - d));
}

}  // namespace atelier
