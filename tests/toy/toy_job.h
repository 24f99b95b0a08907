// `toy_regression`: a job kind that exists only in the test suite, to show what a new kind needs: its
// own files (this config + job function on the training scaffold) and one registration line
// (toy_cli.cpp registers it next to the built-in kinds). It fits a small MLP to a fixed random teacher on
// inputs drawn from the job's generator, with warm-up, cosine decay, EMA, gradient clipping, periodic
// validation and exact resume; it writes the EMA weights and metrics.json.
#pragma once
#include <string>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"

namespace atelier::test {

struct ToyConfig {
  TrainSchedule train{.steps = 300, .batch = 16, .warmup = 20, .grad_clip = 1.0, .checkpoint_every = 25};
  double lr = 1e-2;
  double ema_decay = 0.9;
  std::int64_t width = 16;
  std::int64_t seed = 0;
  std::int64_t val_every = 50;
  std::int64_t step_delay_ms = 0;  // slows each step down, so a test can kill a run midway
  std::int64_t nan_at_step = 0;    // 1-based step whose loss is NaN (0: none), for the non-finite guard
  std::string output = "toy.safetensors";

  template <class V>
  void fields(V& v) {
    train.fields(v);
    v("lr", lr, "AdamW learning rate (cosine decay after the warm-up)", Range{0, 1});
    v("ema_decay", ema_decay, "EMA decay of the written weights", Range{0, 1});
    v("width", width, "hidden width of the MLP", Range{1, 4096});
    v("seed", seed, "seed of the teacher, the initialisation and the data", Range{0, 9e15});
    v("val_every", val_every, "steps between validation losses", Range{1, 1e9});
    v("step_delay_ms", step_delay_ms, "sleep per step (tests)", Range{0, 1000});
    v("nan_at_step", nan_at_step, "make this step's loss NaN (tests; 0: none)", Range{0, 1e9});
    v("output", output, "weights file written in the run folder", OutputFile{".safetensors"});
  }
};

void toy_regression_job(const ToyConfig& config, JobContext& ctx);

}  // namespace atelier::test
