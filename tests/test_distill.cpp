// Few-step students: the consistency-distillation pieces against hand-computed values, and the
// distill_steps job end to end (metrics, a student that samples with LCM, exact resume after SIGKILL).
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "core/config.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "core/training_state.h"
#include "diffusion/model_file.h"
#include "distill/consistency.h"
#include "distill/pso_loss.h"
#include "samplers/samplers.h"
#include "tests/helpers.h"

using namespace atelier;
using json = nlohmann::json;

namespace {

DiT tiny_dit(std::uint64_t seed) {
  DiTConfig c;
  c.input_size = 8;
  c.patch_size = 4;
  c.in_channels = 3;
  c.hidden_size = 32;
  c.depth = 1;
  c.num_heads = 2;
  c.num_classes = 2;
  DiT model(c);
  torch::NoGradGuard no_grad;
  Rng rng(seed);
  for (auto& p : model->parameters()) p.copy_(0.05 * rng.randn(p.sizes()));
  model->eval();
  return model;
}

}  // namespace

TEST_CASE("consistency scalings: the identity at t = 0, the network's x0 at large t", "[distill]") {
  auto sc = consistency_scalings(torch::tensor({0, 1, 999}));
  CHECK(sc.c_skip[0].item<double>() == 1.0);
  CHECK(sc.c_out[0].item<double>() == 0.0);
  // s = 10: c_skip = 0.25 / 100.25, c_out = 10 / sqrt(100.25)
  CHECK(sc.c_skip[1].item<double>() == Approx(0.25 / 100.25).epsilon(1e-12));
  CHECK(sc.c_out[1].item<double>() == Approx(10 / std::sqrt(100.25)).epsilon(1e-12));
  CHECK(sc.c_skip[2].item<double>() < 1e-6);
  CHECK(sc.c_out[2].item<double>() == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("the skipping-step grid is LCM's 19, 39, ..., 999 with t_prev clamped at 0", "[distill]") {
  SkippingSteps s{1000, 50};
  auto t = s.timesteps(torch::tensor({std::int64_t{0}, std::int64_t{1}, std::int64_t{49}}));
  CHECK(t[0].item<std::int64_t>() == 19);
  CHECK(t[1].item<std::int64_t>() == 39);
  CHECK(t[2].item<std::int64_t>() == 999);
  auto prev = s.previous(t);
  CHECK(prev[0].item<std::int64_t>() == 0);
  CHECK(prev[1].item<std::int64_t>() == 19);
  CHECK(prev[2].item<std::int64_t>() == 979);
}

TEST_CASE("pseudo-Huber distance on hand-computed values", "[distill]") {
  auto a = torch::full({1, 2}, 3.0f), b = torch::zeros({1, 2});
  CHECK(pseudo_huber(a, b, 4.0).item<double>() == Approx(1.0));  // sqrt(9 + 16) - 4
  CHECK(pseudo_huber(a, b, 0.0).item<double>() == Approx(9.0));  // squared error
  auto mixed = torch::tensor({{3.0f, 0.0f}});
  CHECK(pseudo_huber(mixed, b, 4.0).item<double>() == Approx(0.5));  // (1 + 0) / 2
}

TEST_CASE("the teacher's guided DDIM step matches the formula; guidance 1 is the conditional pass", "[distill]") {
  DiT teacher = tiny_dit(1);
  const auto schedule = NoiseSchedule::linear(1000);
  Rng rng(2);
  auto x = rng.randn({2, 3, 8, 8});
  auto t = torch::tensor({std::int64_t{519}, std::int64_t{19}});
  auto t_prev = torch::tensor({std::int64_t{499}, std::int64_t{0}});
  auto y = torch::tensor({std::int64_t{0}, std::int64_t{1}});
  torch::NoGradGuard no_grad;
  auto cond = teacher->forward(x, t, y).narrow(1, 0, 3);
  auto uncond = teacher->forward(x, t, torch::full_like(y, teacher->null_class())).narrow(1, 0, 3);
  for (double w : {1.0, 3.0}) {
    INFO("guidance " << w);
    auto step = teacher_ddim_step(teacher, schedule, Prediction::eps, x, t, t_prev, y, w);
    for (int i = 0; i < 2; ++i) {
      const double a = schedule.abar(t[i].item<std::int64_t>()), ap = schedule.abar(t_prev[i].item<std::int64_t>());
      auto eps = uncond[i] + w * (cond[i] - uncond[i]);
      auto x0 = (x[i] - std::sqrt(1 - a) * eps) / std::sqrt(a);
      auto expected = std::sqrt(ap) * x0 + std::sqrt(1 - ap) * eps;
      CHECK(test::max_abs_diff(step[i], expected) < 1e-4);
    }
  }
}

TEST_CASE("consistency loss: gradients reach the student only; same seed, same loss", "[distill]") {
  DiT teacher = tiny_dit(1), student = tiny_dit(1), target = tiny_dit(1);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  for (auto& p : target->parameters()) p.set_requires_grad(false);
  student->train();
  shapes::Spec spec;
  spec.size = 8;
  spec.shapes = {0, 1};
  const auto batch = shapes::make_batch(spec, 0, 0, 4);
  const auto schedule = NoiseSchedule::linear(1000);
  ConsistencySettings settings;
  Rng rng(7);
  auto loss = consistency_loss(student, target, teacher, schedule, Prediction::eps, batch, settings, rng);
  REQUIRE(loss.sizes() == torch::IntArrayRef{4});
  CHECK(torch::isfinite(loss).all().item<bool>());
  loss.mean().backward();
  std::int64_t with_grad = 0;
  for (const auto& p : student->parameters())
    if (p.grad().defined()) ++with_grad;
  CHECK(with_grad > 0);
  for (const auto& p : teacher->parameters()) CHECK_FALSE(p.grad().defined());
  for (const auto& p : target->parameters()) CHECK_FALSE(p.grad().defined());
  Rng again(7);
  auto repeat = consistency_loss(student, target, teacher, schedule, Prediction::eps, batch, settings, again);
  CHECK(torch::equal(loss, repeat));
  settings.steps.original_steps = 7;  // does not divide 1000
  CHECK_THROWS_WITH(consistency_loss(student, target, teacher, schedule, Prediction::eps, batch, settings, again),
                    Catch::Contains("original_steps"));
}

TEST_CASE("PSO: sigma^-2-weighted x0 errors and the logistic and hinge losses on hand-computed values",
          "[distill][pso]") {
  auto x0 = torch::zeros({2, 3, 4, 4});
  auto err = weighted_x0_error(torch::ones({2, 3, 4, 4}), x0, torch::tensor({0.5, 0.8}, torch::kDouble));
  CHECK(err[0].item<double>() == Approx(1.0));  // abar / (1 - abar) = 1
  CHECK(err[1].item<double>() == Approx(4.0));
  CHECK_THROWS_WITH(weighted_x0_error(x0, x0, torch::tensor({0.5})), Catch::Contains("abar"));

  PsoLossSettings hinge;  // beta 5, loser weight 0.1, prior 0.5
  auto w = torch::tensor({0.3f, 0.0f}), l = torch::tensor({2.0f, 20.0f});
  auto h = pso_loss(hinge, w, l);
  CHECK(h[0].item<double>() == Approx(1.5 + 1.0));  // relu(1 + 5 * (0.3 - 0.2)) + 0.5 * 2
  CHECK(h[1].item<double>() == Approx(10.0));       // the margin is met: only the prior term is left

  PsoLossSettings logistic = hinge;
  logistic.loss = PsoLoss::Logistic;
  CHECK(pso_loss(logistic, w, l, w, l)[0].item<double>() == Approx(std::log(2.0)));  // no change from the reference
  // A winner error lower than the reference's lowers the loss: -log sigmoid(5 * 0.2).
  CHECK(pso_loss(logistic, w - 0.2, l, w, l)[0].item<double>() == Approx(std::log1p(std::exp(-1.0))));
  CHECK_THROWS_WITH(pso_loss(logistic, w, l), Catch::Contains("reference"));
}

TEST_CASE("PSO pairs: winner and loser share noise and timestep, drawn from the model's own schedule only",
          "[distill][pso]") {
  const auto schedule = NoiseSchedule::by_name("linear", 1000);
  const auto timesteps = lcm_timesteps(1000, 4);  // 999, 759, 499, 259
  torch::manual_seed(1);
  auto winners = torch::rand({64, 3, 4, 4}) * 2 - 1, losers = torch::rand({64, 3, 4, 4}) * 2 - 1;
  Rng rng(5);
  const PsoPairs p = make_pso_pairs(schedule, winners, losers, timesteps, rng);
  REQUIRE(p.x_t.size(0) == 128);
  auto t_w = p.t.slice(0, 0, 64), t_l = p.t.slice(0, 64);
  CHECK(torch::equal(t_w, t_l));
  CHECK(torch::equal(p.noise.slice(0, 0, 64), p.noise.slice(0, 64)));
  // Every timestep is one of the schedule's, and with 64 draws each of the four appears.
  for (const auto t : timesteps) CHECK((t_w == t).any().item<bool>());
  CHECK(torch::isin(t_w, torch::tensor(timesteps)).all().item<bool>());
  // x_t is q(x_t | x0) with that shared noise: subtracting the clean parts leaves the same residual.
  const auto abar = schedule.abar(p.t).to(torch::kFloat).view({-1, 1, 1, 1});
  auto residual = (p.x_t - abar.sqrt() * p.x0) / (1 - abar).sqrt();
  CHECK(torch::allclose(residual.slice(0, 0, 64), residual.slice(0, 64), 1e-4, 1e-5));
  CHECK(torch::allclose(residual, p.noise, 1e-4, 1e-5));
  // The same seed gives the same pairs; mismatched batches are refused.
  Rng again(5);
  CHECK(torch::equal(make_pso_pairs(schedule, winners, losers, timesteps, again).x_t, p.x_t));
  CHECK_THROWS_WITH(make_pso_pairs(schedule, winners, losers.slice(0, 1), timesteps, rng), Catch::Contains("losers"));
}

TEST_CASE("PSO logistic loss: no gradient reaches the frozen reference model's errors", "[distill][pso]") {
  PsoLossSettings logistic;
  logistic.loss = PsoLoss::Logistic;
  auto w = torch::tensor({0.3f, 0.1f}).requires_grad_(), l = torch::tensor({2.0f, 1.0f}).requires_grad_();
  auto w_ref = torch::tensor({0.4f, 0.2f}).requires_grad_(), l_ref = torch::tensor({1.0f, 3.0f}).requires_grad_();
  pso_loss(logistic, w, l, w_ref, l_ref).sum().backward();
  REQUIRE(w.grad().defined());
  CHECK(w.grad().abs().sum().item<double>() > 0);  // the trained model's errors get a gradient
  CHECK(l.grad().abs().sum().item<double>() > 0);
  CHECK_FALSE(w_ref.grad().defined());  // the reference's do not
  CHECK_FALSE(l_ref.grad().defined());
}

TEST_CASE("distill_steps: a student that samples with LCM, teacher and student measured side by side",
          "[distill][cli]") {
  test::TempDir dir;
  const auto base = test::tiny_base_model(dir);
  json job = {{"kind", "distill_steps"},
              {"teacher", base.string()},
              {"steps", 3},
              {"batch", 4},
              {"sample_every", 1000},
              {"eval_steps", {1, 2}},
              {"teacher_steps", 2},
              {"eval_per_class", 2},
              {"reference_samples", 16},
              {"probe", test::source_path("assets/models/probe.safetensors").string()}};
  auto r = test::run_job_file(dir, job, "student");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const json m = load_json_file(dir / "student/metrics.json");
  for (const char* part : {"teacher", "student_1", "student_2"})
    for (const char* key : {"probe_accuracy", "fd_shapes", "sharpness", "seconds_per_image"}) {
      INFO(part << "/" << key);
      CHECK(m.at(part).contains(key));
    }
  CHECK(m["student_1"]["speedup"].get<double>() > 0);
  DiTModelInfo teacher_info, student_info;
  load_dit_model(base, &teacher_info);
  load_dit_model(dir / "student/model.safetensors", &student_info);
  CHECK(student_info.class_names == teacher_info.class_names);
  json sample = {{"kind", "sample"}, {"model", (dir / "student/model.safetensors").string()},
                 {"sampler", "lcm"}, {"steps", 2},
                 {"cfg_scale", 1},   {"per_class", 1},
                 {"probe", ""}};
  auto s = test::run_job_file(dir, sample, "grid");
  INFO(s.output);
  CHECK(s.exit_code == 0);

  SECTION("bad input is one named error") {
    json bad = job;
    bad["original_steps"] = 7;
    auto e = test::run_job_file(dir, bad, "bad1");
    CHECK(e.exit_code != 0);
    CHECK_THAT(e.output, Catch::Contains("original_steps"));
    bad = job;
    bad["teacher"] = (dir / "missing.safetensors").string();
    e = test::run_job_file(dir, bad, "bad2");
    CHECK(e.exit_code != 0);
    CHECK_THAT(e.output, Catch::Contains("teacher"));
  }
}

TEST_CASE("distill_steps: SIGKILL, then --resume, ends with the uninterrupted student", "[distill][resume][cli]") {
  test::TempDir dir;
  const auto base = test::tiny_base_model(dir);
  json j = {{"kind", "distill_steps"},
            {"teacher", base.string()},
            {"steps", 150},
            {"batch", 4},
            {"checkpoint_every", 3},
            {"sample_every", 1000},
            {"eval_steps", {1}},
            {"teacher_steps", 1},
            {"eval_per_class", 1},
            {"probe", ""}};
  test::check_kill_and_resume(j, "model.safetensors");
}

namespace {

// A tiny base distilled for a few steps: a few-step model for the pso tests.
std::filesystem::path tiny_student(const test::TempDir& dir) {
  const auto base = test::tiny_base_model(dir);
  json job = {{"kind", "distill_steps"}, {"teacher", base.string()}, {"steps", 2},  {"batch", 4},
              {"sample_every", 1000},    {"eval_steps", {1}},        {"probe", ""}, {"teacher_steps", 1},
              {"eval_per_class", 1}};
  auto r = test::run_job_file(dir, job, "student");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return dir / "student/model.safetensors";
}

}  // namespace

TEST_CASE("pso: PSO and naive adapters, before/after at each step count, applied by sample", "[distill][pso][cli]") {
  test::TempDir dir;
  const auto student = tiny_student(dir);
  json job = {{"kind", "pso"},
              {"model", student.string()},
              {"styles", {"night"}},
              {"count", 4},
              {"references", 2},
              {"model_steps", 2},
              {"lora_rank", 2},
              {"lora_alpha", 2},
              {"steps", 3},
              {"batch", 2},
              {"sample_every", 1000},
              {"eval_steps", {1, 2}},
              {"eval_per_class", 2},
              {"reference_samples", 16},
              {"probe", test::source_path("assets/models/probe.safetensors").string()}};
  for (const char* objective : {"pso", "naive"}) {
    INFO(objective);
    json j = job;
    j["objective"] = objective;
    auto r = test::run_job_file(dir, j, objective);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    const json m = load_json_file(dir / objective / "metrics.json");
    for (const char* steps : {"steps_1", "steps_2"}) {
      INFO(steps);
      for (const char* when : {"before", "after"})
        for (const char* key : {"class_accuracy", "style_accuracy", "fd_shapes", "sharpness"})
          CHECK(m.at(steps).at(when).contains(key));
      CHECK(m.at(steps).contains("sharpness_ratio"));
      // Sharpness relative to each domain's real images (the student's Shapes data, the target style).
      const json& s = m.at(steps);
      REQUIRE(s.contains("relative_sharpness_ratio"));
      CHECK(s.at("relative_sharpness_ratio").get<double>() ==
            Approx(s.at("after").at("relative_sharpness").get<double>() /
                   s.at("before").at("relative_sharpness").get<double>()));
    }
    json sample = {{"kind", "sample"},
                   {"model", student.string()},
                   {"adapters", {(dir / objective / "adapter.safetensors").string()}},
                   {"sampler", "lcm"},
                   {"steps", 2},
                   {"cfg_scale", 1},
                   {"per_class", 1},
                   {"probe", ""}};
    auto s = test::run_job_file(dir, sample, std::string("grid_") + objective);
    INFO(s.output);
    CHECK(s.exit_code == 0);
  }
  SECTION("the logistic loss and online references run too") {
    json j = job;
    j["loss"] = "logistic";
    j["refresh_every"] = 2;
    j["eval_steps"] = {1};
    j["probe"] = "";
    auto r = test::run_job_file(dir, j, "logistic");
    INFO(r.output);
    CHECK(r.exit_code == 0);
  }
  SECTION("bad input is one named error") {
    json j = job;
    j["styles"] = {"neon"};
    auto r = test::run_job_file(dir, j, "bad_style");
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("styles"));
    j = job;
    j["images"] = (dir / "nowhere").string();
    r = test::run_job_file(dir, j, "bad_folder");
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("images"));
  }
}

TEST_CASE("pso: SIGKILL, then --resume, ends with the uninterrupted adapter (online references)",
          "[distill][pso][resume][cli]") {
  test::TempDir dir;
  const auto student = tiny_student(dir);
  json j = {{"kind", "pso"},      {"model", student.string()},
            {"count", 4},         {"references", 2},
            {"model_steps", 2},   {"lora_rank", 2},
            {"lora_alpha", 2},    {"steps", 150},
            {"batch", 2},         {"checkpoint_every", 3},
            {"refresh_every", 5}, {"sample_every", 1000},
            {"eval_steps", {1}},  {"eval_per_class", 1},
            {"probe", ""}};
  test::check_kill_and_resume(j, "adapter.safetensors");
}
