// The `distill_steps` job: turns a DiT base model into a few-step student by consistency distillation
// (distill/consistency.h). The student starts as a copy of the teacher; its EMA target network is what
// the job ships, a model file that samples with the LCM sampler in 1-8 steps and no guidance pass (the
// teacher's guidance scale is folded in). At the end the student at each of `eval_steps` and the teacher
// at DDIM-`teacher_steps` with guidance are measured side by side: probe accuracy, FD-shapes, sharpness and
// seconds per image.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"

namespace atelier {

struct DistillStepsConfig {
  std::string teacher = "assets/models/dit_shapes.safetensors";
  std::int64_t original_steps = 50;
  double guidance = 3.0;
  double huber_c = 0.001;
  TrainSchedule train{.steps = 2000, .batch = 32, .warmup = 0, .grad_clip = 1.0, .checkpoint_every = 250};
  double lr = 1e-4;
  double target_ema = 0.95;
  std::int64_t seed = 0;
  std::int64_t sample_every = 250;
  std::vector<std::int64_t> eval_steps{1, 2, 4};
  std::int64_t teacher_steps = 50;
  std::int64_t eval_per_class = 16;
  std::string probe = "assets/models/probe.safetensors";
  std::int64_t reference_samples = 512;
  std::string output = "model.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("teacher", teacher, "the model to distill: an Atelier DiT model file trained on Shapes", Input::Model);
    v("original_steps", original_steps,
      "skipping-step grid: the teacher's ODE is walked in T / original_steps strides (LCM: 50)", Range{1, 1000});
    v("guidance", guidance, "classifier-free guidance scale of the teacher, folded into the student", Range{0, 100});
    v("huber_c", huber_c, "pseudo-Huber constant of the loss (0: squared error)", Range{0, 10});
    train.fields(v);
    v("lr", lr, "AdamW learning rate of the student", Range{0, 1});
    v("target_ema", target_ema, "EMA decay of the target network (the shipped student)", Range{0, 1});
    v("seed", seed, "seed of timesteps, noise and evaluation samples", Range{0, 9e15});
    v("sample_every", sample_every, "steps between preview grids (4-step LCM samples of the target network)",
      Range{1, 1e9});
    v("eval_steps", eval_steps, "step counts the student is evaluated at", Range{1, 64});
    v("teacher_steps", teacher_steps, "DDIM steps of the teacher's evaluation samples", Range{1, 1000});
    v("eval_per_class", eval_per_class, "samples per class for the evaluation", Range{1, 4096});
    v("probe", probe, "Shapes probe for metrics (empty: none)", Input::File);
    v("reference_samples", reference_samples, "real test-split images for FD-shapes", Range{16, 1e6});
    v("output", output, "student model file written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N; a run resumes on any device");
  }
};

void distill_steps_job(const DistillStepsConfig& config, JobContext& ctx);

}  // namespace atelier
