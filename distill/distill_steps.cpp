#include "distill/distill_steps.h"

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/runtime.h"
#include "core/training_state.h"
#include "data/shapes_data.h"
#include "diffusion/generate.h"
#include "diffusion/model_file.h"
#include "distill/consistency.h"
#include "eval/class_metrics.h"
#include "eval/metrics.h"

namespace atelier {
namespace {

DiT load_teacher(const DistillStepsConfig& c, DiTModelInfo& info) {
  if (!std::filesystem::exists(c.teacher)) fail_field("teacher", c.teacher, " does not exist");
  DiT teacher = with_field("teacher", [&] { return load_dit_model(c.teacher, &info); });
  if (!info.data.is_object())
    fail_field("teacher", c.teacher, " has no Shapes training data in its metadata; distill_steps trains on the data ",
               "its teacher was trained on");
  if (c.guidance != 1.0 && teacher->config().class_dropout_prob <= 0)
    fail_field("guidance", c.guidance, ": ", c.teacher,
               " has no null class (trained without label dropout), so it cannot be guided; use 1");
  if (info.num_train_timesteps % c.original_steps != 0)
    fail_field("original_steps", c.original_steps, " does not divide the teacher's ", info.num_train_timesteps,
               " training timesteps");
  return teacher;
}

// A copy of `source` (same config and tensors) on `device`.
DiT copy_of(DiT& source, const DiTConfig& config, torch::Device device, const std::string& what) {
  DiT out(config);
  load_module_tensors(*out, module_tensors(*source), "", what, /*strict=*/true);
  out->to(device);
  return out;
}

struct Measured {
  double seconds_per_image = 0, sharpness = 0, probe_accuracy = -1, fd_shapes = -1;
  json to_json() const {
    json j = {{"seconds_per_image", seconds_per_image}, {"sharpness", sharpness}};
    if (probe_accuracy >= 0) j.update({{"probe_accuracy", probe_accuracy}, {"fd_shapes", fd_shapes}});
    return j;
  }
};

// Samples eval_per_class images per class with `sampler` into `file` and measures them.
class Evaluator {
 public:
  Evaluator(const DistillStepsConfig& c, const DiTModelInfo& info, const shapes::Spec& spec)
      : c_(c), info_(info), metrics_(c.probe, info.class_names, c.eval_per_class, &spec, c.reference_samples) {}
  Measured run(DiT& model, const SamplerSettings& sampler, const std::string& file, const std::string& title,
               JobContext& ctx) {
    torch::NoGradGuard no_grad;
    model->eval();
    const auto t0 = std::chrono::steady_clock::now();
    auto images = save_class_grid(model, info_, c_.eval_per_class, sampler, static_cast<std::uint64_t>(c_.seed) + 5,
                                  ctx.path(file), title, &ctx.cancel);
    Measured m;
    m.seconds_per_image = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                          static_cast<double>(images.size(0));
    ctx.report.artifact(file, ctx.path(file));
    m.sharpness = sharpness(images);
    if (metrics_.has_probe()) {
      m.probe_accuracy = metrics_.class_accuracy(images);
      m.fd_shapes = metrics_.fd_shapes(images);
    }
    return m;
  }

 private:
  const DistillStepsConfig& c_;
  const DiTModelInfo& info_;
  ClassGridMetrics metrics_;
};

}  // namespace

void distill_steps_job(const DistillStepsConfig& c, JobContext& ctx) {
  // Config -> build: the frozen teacher, the student and its target network (both copies of it), AdamW.
  const torch::Device device = select_device(c.device);
  DiTModelInfo info;
  DiT teacher = load_teacher(c, info);
  const ShapesData data = with_field("teacher", [&] { return from_json<ShapesData>(info.data); });
  const shapes::Spec spec = data.spec(static_cast<int>(info.dit.input_size));
  teacher->to(device);
  teacher->eval();
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  DiT student = copy_of(teacher, info.dit, device, "student");
  DiT target = copy_of(teacher, info.dit, device, "target");
  target->eval();
  std::vector<torch::Tensor> params;
  for (auto& p : student->parameters())
    if (p.requires_grad()) params.push_back(p);  // all but the fixed positional embedding
  for (auto& p : target->parameters()) p.set_requires_grad(false);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(c.lr).weight_decay(0));
  const NoiseSchedule schedule = NoiseSchedule::by_name(info.schedule, info.num_train_timesteps);
  const Prediction prediction = prediction_by_name(info.prediction);
  const ConsistencySettings settings{{info.num_train_timesteps, c.original_steps}, c.guidance, c.huber_c};
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  ctx.report.info("consistency distillation of " + c.teacher + ": guidance " + json(c.guidance).dump() + ", " +
                  std::to_string(c.original_steps) + "-step skipping grid, " + std::to_string(info.class_names.size()) +
                  " classes");

  auto write_model = [&] {
    save_dit_model(ctx.path(c.output), target, info, to_json(c));
    ctx.report.artifact("model", ctx.path(c.output));
  };

  // Loop: the target network follows the student by EMA; previews are 4-step LCM samples of the target.
  TrainLoop loop(ctx, c.train, {{{"student.", student.get()}, {"target.", target.get()}}, &opt, &rng});
  loop.clip(params);
  loop.ema(*target, *student, c.target_ema);
  loop.every(c.sample_every, [&](std::int64_t done) {
    save_class_grid(target, info, 4, few_step_sampler(4), static_cast<std::uint64_t>(c.seed) + 3,
                    ctx.path("preview.png"), "step " + std::to_string(done) + ", lcm 4 steps", &ctx.cancel);
    ctx.report.artifact("preview", ctx.path("preview.png"));
    write_model();
  });
  student->train();
  loop.run([&](std::int64_t step) {
    const std::int64_t b = c.train.batch;  // this rank's rows of the global batch (all of it in one process)
    const auto batch = shapes::make_batch(spec, 0, step * b + ctx.shard.first(b), ctx.shard.size(b));
    return TrainStep{
        consistency_loss(student, target, teacher, schedule, prediction, batch, settings, rng, ctx.shard).mean()};
  });
  write_model();

  // Finish: the teacher (DDIM with guidance) and the student at each step count, side by side.
  Evaluator evaluator(c, info, spec);
  SamplerSettings teacher_sampler;
  teacher_sampler.sampler = "ddim";
  teacher_sampler.steps = c.teacher_steps;
  teacher_sampler.cfg_scale = c.guidance;
  json m = json::object();
  std::map<std::string, double> headline;
  const Measured t =
      evaluator.run(teacher, teacher_sampler, "teacher.png",
                    "teacher: ddim " + std::to_string(c.teacher_steps) + " steps, cfg " + json(c.guidance).dump(), ctx);
  m["teacher"] = t.to_json();
  for (const std::int64_t n : c.eval_steps) {
    const std::string name = "student_" + std::to_string(n);
    const Measured s =
        evaluator.run(target, few_step_sampler(n), name + ".png", "student: lcm " + std::to_string(n) + " steps", ctx);
    m[name] = s.to_json();
    m[name]["speedup"] = s.seconds_per_image > 0 ? t.seconds_per_image / s.seconds_per_image : 0.0;
    for (const auto& [key, value] : m[name].items()) headline[name + "/" + key] = value.get<double>();
  }
  for (const auto& [key, value] : m["teacher"].items()) headline["teacher/" + key] = value.get<double>();
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  ctx.report.metrics(headline);
}

}  // namespace atelier
