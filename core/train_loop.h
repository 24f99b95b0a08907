// The training scaffold every training job shares: resume from the newest checkpoint, cancel ->
// checkpoint -> Cancelled, the checkpoint cadence, per-group learning-rate warm-up (and optional cosine
// decay), gradient clipping, EMA of any parameter set, timing and progress reporting. A helper, not a
// framework: the job owns its model, data and loss; a job function reads config -> build -> loop -> finish:
//
//   TrainLoop loop(ctx, c.schedule, {{{"model.", net.get()}}, &opt, &rng});
//   loop.every(c.eval_every, [&](std::int64_t done) { evaluate(done); });
//   loop.run([&](std::int64_t step) {
//     auto batch = ...;                              // draws from rng in a fixed order
//     return TrainStep{loss, {{"mse", mse}}};       // the loop does backward, clip, step, EMA, progress
//   });
//   write outputs;
//
// Everything a resumed run needs must be in `parts` (modules, optimizer, RNG); the data position is the
// step itself, so a job that draws batch `step` from its dataset resumes exactly.
//
// Data-parallel runs (ctx.parallel, core/distributed.h): the loop checks that the batch divides over the
// ranks, starts every rank from rank 0's module values, averages the loss, the step's scalars and the
// optimizer's gradients over the ranks before the non-finite guard and the clip, and leaves checkpoints to
// rank 0. The job keeps its rows of each global batch (ctx.shard): it draws the global batch's positions
// and random numbers as one process would and computes the loss on rows shard.first(B) .. + shard.size(B)
// (shard_rows), so any number of processes trains the same model as one (and resumes with another count).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/training_state.h"

namespace atelier {

class GradientAverager;  // core/distributed.h

// What a step whose loss or gradient is not finite does: stop the job with an error (nothing of that
// state is written; the last good checkpoint stays), or skip the update with a warning.
enum class NonFinite { Stop, Skip };
inline const EnumNames<NonFinite>& enum_names(NonFinite) {
  static const EnumNames<NonFinite> names = {{NonFinite::Stop, "stop"}, {NonFinite::Skip, "skip"}};
  return names;
}

// Steps and cadence of a training run (field names shared by every training job).
struct TrainSchedule {
  std::int64_t steps = 1000;
  std::int64_t batch = 64;
  std::int64_t warmup = 0;
  double grad_clip = 1.0;
  std::int64_t checkpoint_every = 250;
  NonFinite nonfinite = NonFinite::Stop;

  template <class V>
  void fields(V& v) {
    v("steps", steps, "optimizer steps", Range{1, 1e9});
    v("batch", batch, "images per step", Range{1, 65536});
    v("warmup", warmup, "linear learning-rate warm-up steps (the EMA starts after them)", Range{0, 1e9});
    v("grad_clip", grad_clip, "gradient-norm clip (0: off)", Range{0, 1e6});
    v("checkpoint_every", checkpoint_every, "steps between checkpoints", Range{1, 1e9});
    v("nonfinite", nonfinite,
      "a step with a non-finite loss or gradient: stop (error; the last good checkpoint is kept) or skip it");
  }
};

// Preview grids written while a generator trains.
struct PreviewSettings {
  std::int64_t sample_every = 100;
  std::int64_t sample_steps = 50;
  double cfg_scale = 3.0;

  template <class V>
  void fields(V& v) {
    v("sample_every", sample_every, "steps between preview grids", Range{1, 1e9});
    v("sample_steps", sample_steps, "sampling steps (DPM++ 2M) of previews and evaluation samples", Range{1, 1000});
    v("cfg_scale", cfg_scale, "guidance scale of previews and evaluation samples", Range{0, 100});
  }
};

// Learning rate over the run, as a factor of each optimizer group's own rate: linear warm-up over
// `warmup` steps, then constant or a cosine decay to 0 at `steps`.
enum class LrDecay { Constant, Cosine };
inline const EnumNames<LrDecay>& enum_names(LrDecay) {
  static const EnumNames<LrDecay> names = {{LrDecay::Constant, "constant"}, {LrDecay::Cosine, "cosine"}};
  return names;
}
double scheduled_lr(double base_lr, std::int64_t step, std::int64_t warmup, std::int64_t steps, LrDecay decay);

// What one training step returns: the loss to minimise and scalars to report next to it.
struct TrainStep {
  TrainStep(torch::Tensor loss, std::map<std::string, torch::Tensor> scalars = {})
      : loss(std::move(loss)), scalars(std::move(scalars)) {}
  torch::Tensor loss;
  std::map<std::string, torch::Tensor> scalars;  // e.g. {"mse", terms.mse.mean()}
};

class TrainLoop {
 public:
  // Restores `parts` from the run's newest checkpoint when the job resumes.
  TrainLoop(JobContext& ctx, const TrainSchedule& schedule, const TrainingParts& parts,
            LrDecay decay = LrDecay::Constant);

  // Parameters whose gradient norm is clipped, in this order (default: the optimizer's, group by group).
  void clip(std::vector<torch::Tensor> params) { clip_ = std::move(params); }
  // EMA of `model`'s parameters in `ema` (same structure), updated after every optimizer step with
  // decay 0 during warm-up, then `decay`.
  void ema(torch::nn::Module& ema, const torch::nn::Module& model, double decay);
  // Runs `action(done)` after step `done` when done % every == 0; at the last step only with `at_end`.
  // Actions run in the order they were added, after the periodic checkpoint.
  void every(std::int64_t every, std::function<void(std::int64_t done)> action, bool at_end = false);

  // Runs steps [start(), steps): cancel check, learning rate, `step(step)`, backward, the non-finite
  // guard, clip, optimizer step, EMA, progress ("train": loss, the step's scalars, lr), checkpoint and
  // actions; then a final checkpoint, so a failing final write loses no steps.
  void run(const std::function<TrainStep(std::int64_t step)>& step);

  std::int64_t start() const { return start_; }
  // Seconds spent in steps (the step function through the EMA update) since this process started.
  double step_seconds() const { return step_seconds_; }
  // Saves the parts at `step` (rank 0 of a data-parallel run; the others return).
  void checkpoint(std::int64_t step);

 private:
  void start_parallel();
  void reduce_step(TrainStep& r);

  struct Action {
    std::int64_t every;
    std::function<void(std::int64_t)> run;
    bool at_end;
  };
  JobContext& ctx_;
  TrainSchedule schedule_;
  TrainingParts parts_;
  LrDecay decay_;
  std::vector<double> base_lr_;
  std::vector<torch::Tensor> clip_;
  torch::nn::Module* ema_ = nullptr;
  const torch::nn::Module* ema_source_ = nullptr;
  double ema_decay_ = 0;
  std::vector<Action> actions_;
  std::int64_t start_ = 0;
  double step_seconds_ = 0;
  double reduced_loss_ = 0;
  std::shared_ptr<GradientAverager> averager_;  // data-parallel runs
};

}  // namespace atelier
