// Ref: Luo et al. 2023, "Latent Consistency Models" (Algorithm 1); diffusers v0.42.1
// examples/consistency_distillation/train_lcm_distill_sd_wds.py (skipping-step grid, scalings, pseudo-Huber)
// and src/diffusers/schedulers/scheduling_lcm.py (the same scalings at sampling time).
#include "distill/consistency.h"

#include "core/distributed.h"
#include "core/error.h"
#include "core/rng.h"

namespace atelier {
namespace {

// [N] -> [N, 1, 1, 1] in x's dtype and device.
torch::Tensor per_sample(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<std::int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
  shape[0] = v.size(0);
  return v.to(x.device(), x.scalar_type()).view(shape);
}

torch::Tensor prediction_channels(const torch::Tensor& model_output, const torch::Tensor& x) {
  if (model_output.size(1) == x.size(1)) return model_output;
  if (model_output.size(1) == 2 * x.size(1)) return model_output.narrow(1, 0, x.size(1));  // learned sigma
  fail("model output has ", model_output.size(1), " channels for a ", x.size(1), "-channel sample");
}

}  // namespace

ConsistencyScalings consistency_scalings(const torch::Tensor& t, double timestep_scaling) {
  auto s = t.to(torch::kDouble) * timestep_scaling;
  auto s2 = s * s;
  return {0.25 / (s2 + 0.25), s / (s2 + 0.25).sqrt()};
}

torch::Tensor consistency_function(const torch::Tensor& model_output, const torch::Tensor& x_t, const torch::Tensor& t,
                                   const NoiseSchedule& schedule, Prediction prediction, double timestep_scaling) {
  auto out = prediction_channels(model_output, x_t);
  auto x0 = to_x0_eps(prediction, out, x_t, schedule.abar(t)).x0;
  const auto sc = consistency_scalings(t, timestep_scaling);
  return per_sample(sc.c_skip, x_t) * x_t + per_sample(sc.c_out, x_t) * x0;
}

torch::Tensor teacher_ddim_step(DiT& teacher, const NoiseSchedule& schedule, Prediction prediction,
                                const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& t_prev,
                                const torch::Tensor& labels, double guidance) {
  torch::NoGradGuard no_grad;
  const auto n = x_t.size(0);
  auto out = teacher->forward(torch::cat({x_t, x_t}), torch::cat({t, t}),
                              torch::cat({labels, torch::full_like(labels, teacher->null_class())}));
  out = prediction_channels(out, x_t);
  const auto abar = schedule.abar(t);
  auto cond = to_x0_eps(prediction, out.narrow(0, 0, n), x_t, abar);
  auto uncond = to_x0_eps(prediction, out.narrow(0, n, n), x_t, abar);
  auto x0 = uncond.x0 + guidance * (cond.x0 - uncond.x0);
  auto eps = uncond.eps + guidance * (cond.eps - uncond.eps);
  const auto abar_prev = schedule.abar(t_prev);
  return per_sample(abar_prev.sqrt(), x_t) * x0 + per_sample((1 - abar_prev).sqrt(), x_t) * eps;
}

torch::Tensor pseudo_huber(const torch::Tensor& a, const torch::Tensor& b, double c) {
  auto d2 = (a.to(torch::kFloat) - b.to(torch::kFloat)).pow(2);
  auto per_element = c > 0 ? (d2 + c * c).sqrt() - c : d2;
  return per_element.flatten(1).mean(1);
}

torch::Tensor consistency_loss(DiT& student, DiT& target, DiT& teacher, const NoiseSchedule& schedule,
                               Prediction prediction, const shapes::Batch& data, const ConsistencySettings& settings,
                               Rng& rng, const Shard& shard) {
  if (settings.steps.original_steps < 1 || settings.steps.num_train_timesteps % settings.steps.original_steps != 0)
    fail_field("original_steps", settings.steps.original_steps, " does not divide the ",
               settings.steps.num_train_timesteps, " training timesteps");
  const auto device = student->pos_embed.device();
  const auto on_device = torch::TensorOptions().device(device);
  const auto batch = data.images.size(0) * shard.world;  // the global batch the random numbers are drawn for
  auto x0 = data.images.to(device);
  auto labels = data.labels.to(device);
  auto noise_shape = data.images.sizes().vec();
  noise_shape[0] = batch;
  auto index = shard_rows(rng.randint(settings.steps.original_steps, {batch}, on_device), shard);
  auto noise = shard_rows(rng.randn(noise_shape, on_device), shard);
  auto t = settings.steps.timesteps(index);
  auto t_prev = settings.steps.previous(t);
  auto x_t = add_noise(schedule, x0, noise, t);

  auto online =
      consistency_function(student->forward(x_t, t, labels), x_t, t, schedule, prediction, settings.timestep_scaling);
  torch::Tensor goal;
  {
    torch::NoGradGuard no_grad;
    auto x_prev = teacher_ddim_step(teacher, schedule, prediction, x_t, t, t_prev, labels, settings.guidance);
    goal = consistency_function(target->forward(x_prev, t_prev, labels), x_prev, t_prev, schedule, prediction,
                                settings.timestep_scaling);
  }
  return pseudo_huber(online, goal, settings.huber_c);
}

SamplerSettings few_step_sampler(std::int64_t steps) {
  SamplerSettings s;
  s.sampler = "lcm";
  s.steps = steps;
  s.cfg_scale = 1.0;
  return s;
}

}  // namespace atelier
