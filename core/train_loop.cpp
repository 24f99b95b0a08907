#include "core/train_loop.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/distributed.h"

namespace atelier {
namespace {

// L2 norm of all gradients (the norm clip_grad_norm_ computes), without clipping.
double grad_norm(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().norm());
  return norms.empty() ? 0.0 : torch::stack(norms).norm().item<double>();
}

// Whether every value of the tensors is finite (one reduction: NaN and infinity propagate into the sum).
bool all_finite(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sums;
  for (const auto& t : tensors)
    if (t.is_floating_point()) sums.push_back(t.sum(torch::kDouble));
  return sums.empty() || std::isfinite(torch::stack(sums).sum().item<double>());
}

}  // namespace

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
  std::vector<std::string> notes;
  start_ = ctx.resume ? restore_training_parts(ctx.run_dir, parts_, &notes) : 0;
  for (const auto& note : notes) ctx.report.warn(note);
  if (start_ > 0) ctx.report.info("resumed from step " + std::to_string(start_));
  if (ctx.parallel != nullptr) start_parallel();
}

void TrainLoop::start_parallel() {
  ProcessGroup& group = *ctx_.parallel;
  if (parts_.optimizer == nullptr) fail("a data-parallel run needs a training job with an optimizer");
  if (schedule_.batch % group.world() != 0)
    fail_field("batch", schedule_.batch, " is not a multiple of the ", group.world(),
               " data-parallel processes (each takes batch / processes rows)");
  // Every rank resumed from the same checkpoint (the run folder is shared), and starts from rank 0's values.
  auto start = torch::tensor({static_cast<double>(start_)}, torch::kDouble);
  auto first = start.clone();
  group.broadcast({first});
  if (first.item<double>() != static_cast<double>(start_))
    fail("data-parallel rank ", group.rank(), " resumed at step ", start_, " but rank 0 at step ",
         static_cast<std::int64_t>(first.item<double>()),
         ": every rank must see the same run folder (a filesystem all nodes share)");
  std::vector<torch::Tensor> tensors;
  for (const auto& [prefix, module] : parts_.modules) {
    for (const auto& p : module->parameters()) tensors.push_back(p.detach());
    for (const auto& b : module->buffers()) tensors.push_back(b);
  }
  group.broadcast(tensors);
  // The optimizer's gradients are averaged over the ranks in buckets, overlapped with backward.
  std::vector<torch::Tensor> params;
  for (auto& g : parts_.optimizer->param_groups())
    for (const auto& p : g.params()) params.push_back(p);
  averager_ = std::make_shared<GradientAverager>(group, params);
  double bytes = 0;  // what each step all-reduces: the optimizer's gradients
  for (auto& g : parts_.optimizer->param_groups())
    for (const auto& p : g.params()) bytes += static_cast<double>(p.numel() * p.element_size());
  char volume[64];
  std::snprintf(volume, sizeof volume, "%.3f MB (%s)", bytes / 1e6,
                params.empty() ? "gloo" : group.backend(params.front().device()).c_str());
  if (group.rank() == 0)
    ctx_.report.info("data-parallel: " + std::to_string(group.world()) + " processes, " +
                     std::to_string(schedule_.batch / group.world()) + " of each batch of " +
                     std::to_string(schedule_.batch) + " per process; gradients all-reduced per step: " + volume);
}

// The loss and the step's scalars as their means over the ranks (one all-reduce), so every rank takes the
// same decisions (non-finite guard) and reports the global batch's figures.
void TrainLoop::reduce_step(TrainStep& r) {
  std::vector<torch::Tensor> values{r.loss.detach().reshape({1}).to(torch::kDouble)};
  for (const auto& [name, value] : r.scalars) values.push_back(value.detach().reshape({1}).to(torch::kDouble));
  auto all = torch::cat(values).cpu();
  ctx_.parallel->average({all});
  reduced_loss_ = all[0].item<double>();
  std::size_t k = 1;
  for (auto& [name, value] : r.scalars) value = all[static_cast<std::int64_t>(k++)];
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
  if (!ctx_.shard.main()) return;  // rank 0 writes; every rank resumes from its checkpoints
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
    if (ctx_.parallel != nullptr) reduce_step(r);
    const double loss = ctx_.parallel != nullptr ? reduced_loss_ : r.loss.item<double>();
    std::string bad = std::isfinite(loss) ? "" : "loss " + std::to_string(loss);
    if (opt != nullptr && bad.empty()) {
      opt->zero_grad();
      if (averager_) averager_->begin();
      r.loss.backward();
      if (averager_) averager_->finish();
      const double norm =
          schedule_.grad_clip > 0 ? torch::nn::utils::clip_grad_norm_(clip_, schedule_.grad_clip) : grad_norm(clip_);
      if (!std::isfinite(norm)) bad = "gradient norm " + std::to_string(norm);
    }
    if (!bad.empty()) {
      if (schedule_.nonfinite == NonFinite::Stop)
        fail("step ", step + 1, ": non-finite ", bad, "; stopped before the update, nothing of this state was written",
             " (the last good checkpoint is kept; lower lr, set grad_clip, or \"nonfinite\": \"skip\")");
      ctx_.report.warn("step " + std::to_string(step + 1) + ": non-finite " + bad + ", step skipped");
      if (opt != nullptr) opt->zero_grad();
    } else {
      if (opt != nullptr) opt->step();
      if (opt != nullptr && !all_finite(clip_))  // an update that overflowed: nothing after it may be written
        fail("step ", step + 1, ": the update made parameters non-finite (loss ", loss,
             "); stopped, nothing of this state was written (the last good checkpoint is kept; lower lr or set "
             "grad_clip)");
      if (ema_ != nullptr) ema_update(*ema_, *ema_source_, step < schedule_.warmup ? 0.0 : ema_decay_);
    }
    step_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    const std::int64_t done = step + 1;
    if (bad.empty()) {
      std::map<std::string, double> scalars = {{"loss", loss}};
      for (const auto& [name, value] : r.scalars) scalars[name] = value.item<double>();
      if (opt != nullptr) scalars["lr"] = lr;
      ctx_.report.progress("train", done, steps, scalars);
    }
    if (done % schedule_.checkpoint_every == 0 && done < steps) checkpoint(done);
    for (const auto& a : actions_)
      if (done % a.every == 0 ? (done < steps || a.at_end) : (done == steps && a.at_end)) a.run(done);
  }
  if (start_ < steps) checkpoint(steps);
}

}  // namespace atelier
