// Ref: Miao et al., "Tuning Timestep-Distilled Diffusion Model Using Pairwise Sample Optimization" (ICLR 2025),
// Eq. for the offline PSO objective and its hinge variant with the prior term.
#include "distill/pso_loss.h"

#include "core/error.h"

namespace atelier {

PsoPairs make_pso_pairs(const NoiseSchedule& schedule, const torch::Tensor& winners, const torch::Tensor& losers,
                        const std::vector<std::int64_t>& timesteps, Rng& rng, const Shard& shard) {
  if (winners.sizes() != losers.sizes())
    fail("PSO pairs: winners ", winners.sizes(), " and losers ", losers.sizes(), " differ in shape");
  if (timesteps.empty()) fail("PSO pairs: no timesteps to draw from");
  const auto on_device = torch::TensorOptions().device(winners.device());
  const auto batch = winners.size(0);
  auto k = rng.randint(static_cast<std::int64_t>(timesteps.size()), {batch}, on_device);
  auto t = torch::tensor(timesteps, on_device.dtype(torch::kLong)).index_select(0, k);
  auto noise = rng.randn(winners.sizes(), on_device);
  const auto rows = [&](const torch::Tensor& x) { return x.narrow(0, shard.first(batch), shard.size(batch)); };
  t = rows(t);
  noise = rows(noise);
  PsoPairs p;
  p.x0 = torch::cat({rows(winners), rows(losers)});
  p.t = torch::cat({t, t});
  p.noise = torch::cat({noise, noise});
  p.x_t = add_noise(schedule, p.x0, p.noise, p.t);
  return p;
}

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
  auto d_ref = winner_ref.detach() - s.loser_weight * loser_ref.detach();
  return -torch::log_sigmoid(s.beta * (d_ref - d));
}

}  // namespace atelier
