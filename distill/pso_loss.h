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

#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/rng.h"
#include "samplers/schedule.h"

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

// One batch of pairs: winner i and loser i share one noise and one timestep, drawn uniformly from
// `timesteps` (the model's own few-step schedule, never another timestep). Tensors have 2B rows, the
// winners first: x0 (clean images), x_t (noised), t (timesteps), noise. In a data-parallel run the
// random numbers are drawn for the B global pairs and the pairs keep `shard`'s rows (2 B / world rows).
struct PsoPairs {
  torch::Tensor x0, x_t, t, noise;
};
PsoPairs make_pso_pairs(const NoiseSchedule& schedule, const torch::Tensor& winners, const torch::Tensor& losers,
                        const std::vector<std::int64_t>& timesteps, Rng& rng, const Shard& shard = {});

// Per-sample sigma^-2-weighted x0 error [N]; abar [N] (any float dtype).
torch::Tensor weighted_x0_error(const torch::Tensor& x0_hat, const torch::Tensor& x0, const torch::Tensor& abar);

// The per-sample PSO loss [N] from the trained model's errors (winner, loser) and, for the logistic
// loss, the frozen reference model's errors (ignored by the hinge loss; may be undefined there). No
// gradient flows into the reference errors: the reference model stays frozen whatever it is given.
torch::Tensor pso_loss(const PsoLossSettings& settings, const torch::Tensor& winner, const torch::Tensor& loser,
                       const torch::Tensor& winner_ref = {}, const torch::Tensor& loser_ref = {});

}  // namespace atelier
