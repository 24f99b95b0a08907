#include "core/train_loop.h"

#include <chrono>
#include <cmath>

namespace atelier {

double scheduled_lr(double base_lr, std::int64_t step, std::int64_t warmup, std::int64_t steps, LrDecay decay) {
  if (warmup > 0 && step < warmup) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (decay == LrDecay::Constant) return base_lr;
  const auto span = std::max<std::int64_t>(1, steps - warmup);
  return 0.5 * base_lr * (1 + std::cos(M_PI * static_cast<double>(step - warmup) / static_cast<double>(span)));
}

TrainLoop::TrainLoop(JobContext& ctx, const TrainSchedule& schedule, const TrainingParts& parts, LrDecay decay)
    : ctx_(ctx), schedule_(schedule), parts_(parts), decay_(decay) {
  if (parts_.optimizer != nullptr)
    for (auto& g : parts_.optimizer->param_groups()) {
      base_lr_.push_back(g.options().get_lr());
      for (const auto& p : g.params()) clip_.push_back(p);
    }
  start_ = ctx.resume ? restore_training_parts(ctx.run_dir, parts_) : 0;
  if (start_ > 0) ctx.report.info("resumed from step " + std::to_string(start_));
}

void TrainLoop::ema(torch::nn::Module& ema, const torch::nn::Module& model, double decay) {
  ema_ = &ema;
  ema_source_ = &model;
  ema_decay_ = decay;
}

void TrainLoop::every(std::int64_t every, std::function<void(std::int64_t)> action, bool at_end) {
  actions_.push_back({every, std::move(action), at_end});
}

void TrainLoop::checkpoint(std::int64_t step) {
  ctx_.report.artifact("checkpoint", save_training_parts(ctx_.run_dir, step, parts_));
}

void TrainLoop::run(const std::function<TrainStep(std::int64_t)>& step_fn) {
  const std::int64_t steps = schedule_.steps;
  torch::optim::Optimizer* opt = parts_.optimizer;
  for (std::int64_t step = start_; step < steps; ++step) {
    if (ctx_.cancel.requested()) {
      checkpoint(step);
      throw Cancelled();
    }
    const auto t0 = std::chrono::steady_clock::now();
    double lr = 0;
    for (std::size_t g = 0; opt != nullptr && g < base_lr_.size(); ++g) {
      const double rate = scheduled_lr(base_lr_[g], step, schedule_.warmup, steps, decay_);
      opt->param_groups()[g].options().set_lr(rate);
      if (g == 0) lr = rate;
    }
    TrainStep r = step_fn(step);
    if (opt != nullptr) {
      opt->zero_grad();
      r.loss.backward();
      if (schedule_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(clip_, schedule_.grad_clip);
      opt->step();
    }
    if (ema_ != nullptr) ema_update(*ema_, *ema_source_, step < schedule_.warmup ? 0.0 : ema_decay_);
    step_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::map<std::string, double> scalars = {{"loss", r.loss.item<double>()}};
    for (const auto& [name, value] : r.scalars) scalars[name] = value.item<double>();
    if (opt != nullptr) scalars["lr"] = lr;
    const std::int64_t done = step + 1;
    ctx_.report.progress("train", done, steps, scalars);
    if (done % schedule_.checkpoint_every == 0 && done < steps) checkpoint(done);
    for (const auto& a : actions_)
      if (done % a.every == 0 ? (done < steps || a.at_end) : (done == steps && a.at_end)) a.run(done);
  }
}

}  // namespace atelier
