// Pairwise sample optimization (Miao et al., ICLR 2025): the losses that fine-tune a few-step model on
// target images without losing its few-step sharpness. A winner (a target image) and a loser (a
// reference image sampled from the few-step model itself) are noised with the same noise at the same
// timestep of the model's own schedule; each gets a per-sample error in x0 space weighted by sigma^-2,
//   L = abar / (1 - abar) * mean((x0_hat - x0)^2),
// and the loss raises the margin of the winner over the loser:
//   d = L_w - loser_weight * L_l
//   logistic: -log sigmoid(beta * (d_ref - d))   with d_ref from the frozen model (adapters off)
//   hinge:    relu(1 + beta * d) + prior_weight * L_l
// The prior term keeps the model's likelihood of its own samples, which is what keeps it few-step.
#pragma once
#include <torch/torch.h>

#include "core/config.h"

namespace atelier {

enum class PsoLoss { Logistic, Hinge };
inline const EnumNames<PsoLoss>& enum_names(PsoLoss) {
  static const EnumNames<PsoLoss> names = {{PsoLoss::Logistic, "logistic"}, {PsoLoss::Hinge, "hinge"}};
  return names;
}

struct PsoLossSettings {
  PsoLoss loss = PsoLoss::Hinge;
  double beta = 5.0;
  double loser_weight = 0.1;
  double prior_weight = 0.5;  // hinge only
};

// Per-sample sigma^-2-weighted x0 error [N]; abar [N] (any float dtype).
torch::Tensor weighted_x0_error(const torch::Tensor& x0_hat, const torch::Tensor& x0, const torch::Tensor& abar);

// The per-sample PSO loss [N] from the trained model's errors (winner, loser) and, for the logistic
// loss, the frozen reference model's errors (ignored by the hinge loss; may be undefined there).
torch::Tensor pso_loss(const PsoLossSettings& settings, const torch::Tensor& winner, const torch::Tensor& loser,
                       const torch::Tensor& winner_ref = {}, const torch::Tensor& loser_ref = {});

}  // namespace atelier
