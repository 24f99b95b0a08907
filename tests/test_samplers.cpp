// samplers/: schedules, spacings and respacing, prediction conversions, per-step parity with the diffusers
// schedulers and full-loop parity (fixtures by scripts/make_sampler_fixtures.py), and convergence on analytic
// denoisers. Tolerance: |actual - expected| <= 1e-5 * max(1, max |expected|); diffusers keeps its schedule in
// float32, ours is float64.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "samplers/samplers.h"
#include "samplers/schedule.h"
#include "tests/helpers.h"

using namespace atelier;

namespace {

constexpr double kTol = 1e-5;

const TensorMap& fixtures() {
  static const TensorFile file = safetensors::load(test::source_path("tests/fixtures/samplers/samplers.safetensors"));
  return file.tensors;
}

bool has(const std::string& name) {
  return fixtures().count(name) > 0;
}

torch::Tensor fx(const std::string& name) {
  auto it = fixtures().find(name);
  if (it == fixtures().end()) FAIL("fixture tensor " << name << " is missing");
  return it->second;
}

std::vector<std::int64_t> ints(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

std::vector<double> doubles(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

void require_close(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what,
                   double tol = kTol) {
  REQUIRE(actual.sizes() == expected.sizes());
  double scale = std::max(1.0, expected.abs().max().item<double>());
  double diff = test::max_abs_diff(actual, expected);
  INFO(what << ": max |diff| = " << diff << ", scale " << scale);
  REQUIRE(diff <= tol * scale);
}

void require_close(const std::vector<double>& actual, const torch::Tensor& expected, const std::string& what,
                   double tol = kTol) {
  require_close(torch::tensor(actual, torch::kDouble), expected.to(torch::kDouble), what, tol);
}

torch::Tensor sample_in() {
  return fx("inputs/sample");
}
torch::Tensor out_in(int i) {
  return fx("inputs/out" + std::to_string(i));
}

std::int64_t next_t(const std::vector<std::int64_t>& ts, std::size_t k) {
  return k + 1 < ts.size() ? ts[k + 1] : -1;
}

// The fixtures' toy network: 0.9 x + bias * (t / 1000) (+ tanh(x) as learned-sigma variance values).
Denoiser toy(bool learned = false) {
  auto bias = fx("loop/bias");
  return [bias, learned](const torch::Tensor& x, const torch::Tensor& t) {
    auto out = 0.9 * x + bias * (t / 1000).view({-1, 1, 1, 1});
    return learned ? torch::cat({out, torch::tanh(x)}, 1) : out;
  };
}

std::string msg_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("noise schedules equal DiT's float64 tables and diffusers' float32 ones", "[samplers]") {
  for (std::string name : {"linear", "scaled_linear", "cosine"}) {
    auto s = NoiseSchedule::by_name(name);
    CHECK(s.size() == 1000);
    CHECK(s.alphas_cumprod.scalar_type() == torch::kDouble);
    require_close(s.alphas_cumprod, fx("schedule/" + name + "/abar_f64"), name + " vs DiT", 1e-14);
    require_close(s.alphas_cumprod, fx("schedule/" + name + "/abar_f32").to(torch::kDouble), name + " vs diffusers",
                  2e-6);
  }
  auto s = NoiseSchedule::scaled_linear();
  CHECK(s.abar(-1) == 1.0);
  CHECK(s.sigma(999) == Approx(14.6146).epsilon(1e-5));  // formats-samplers-lora.md
  CHECK(s.sigmas()[749].item<double>() == Approx(4.0817).epsilon(1e-4));
  CHECK(NoiseSchedule::linear(500).betas[0].item<double>() == Approx(2e-4).epsilon(1e-12));  // DiT's 1000/T
  CHECK(NoiseSchedule::linear(10, 0.1, 0.2).betas[9].item<double>() == 0.2);
  CHECK(msg_of([] { NoiseSchedule::by_name("quadratic"); }).find("'quadratic'") != std::string::npos);
  CHECK(msg_of([&] { s.abar(1000); }).find("timestep 1000") != std::string::npos);
  CHECK_THROWS_AS(NoiseSchedule::from_betas(torch::tensor({0.1, 0.0}, torch::kDouble)), Error);
}

TEST_CASE("timestep spacings equal diffusers' set_timesteps", "[samplers]") {
  const auto ns = ints(fx("spacing/ns"));
  const auto T = std::int64_t{1000};
  for (std::string name : {"leading", "trailing", "linspace"}) {
    auto spacing = spacing_by_name(name);
    std::int64_t offset = spacing == Spacing::leading ? 1 : 0;
    auto ddim = ints(fx("spacing/ddim/" + name)), dpm = ints(fx("spacing/dpm/" + name));
    auto euler = doubles(fx("spacing/euler/" + name));
    std::size_t at_ddim = 0, at_dpm = 0, at_euler = 0;
    for (auto n : ns) {
      INFO(name << " n = " << n);
      auto check = [&](const std::vector<std::int64_t>& mine, const auto& ref, std::size_t& at) {
        // diffusers' trailing lists get an extra -1 when numpy's arange overshoots (n = 61, 103).
        bool overshoot = spacing == Spacing::trailing && (n == 61 || n == 103);
        for (std::size_t i = 0; i < mine.size(); ++i) REQUIRE(static_cast<double>(mine[i]) == ref[at + i]);
        at += mine.size();
        if (overshoot) REQUIRE(ref[at++] == -1);
      };
      check(spaced_timesteps(T, n, spacing, offset), ddim, at_ddim);
      check(dpm_solver_timesteps(T, n, spacing, offset), dpm, at_dpm);
      auto steps = sigma_steps(NoiseSchedule::scaled_linear(), n, spacing, offset);
      for (std::size_t i = 0; i < steps.timesteps.size(); ++i) REQUIRE(steps.timesteps[i] == euler[at_euler + i]);
      at_euler += steps.timesteps.size() + (spacing == Spacing::trailing && (n == 61 || n == 103) ? 1 : 0);
    }
    CHECK(at_ddim == ddim.size());
    CHECK(at_dpm == dpm.size());
    CHECK(at_euler == euler.size());
  }
  auto lcm = ints(fx("spacing/lcm"));
  std::size_t at = 0;
  for (auto n : ints(fx("spacing/lcm_ns"))) {
    auto mine = lcm_timesteps(T, n);
    for (std::size_t i = 0; i < mine.size(); ++i) REQUIRE(mine[i] == lcm[at + i]);
    at += mine.size();
  }
  CHECK(at == lcm.size());
  CHECK(lcm_timesteps(T, 4) == std::vector<std::int64_t>{999, 759, 499, 259});
  CHECK(spaced_timesteps(T, 4, Spacing::trailing) == std::vector<std::int64_t>{999, 749, 499, 249});
  CHECK(msg_of([] { spaced_timesteps(1000, 0, Spacing::leading); }).find("inference steps 0") != std::string::npos);
  CHECK(msg_of([] { spacing_by_name("uniform"); }).find("'uniform'") != std::string::npos);
  CHECK_THROWS_AS(lcm_timesteps(T, 51), Error);
}

TEST_CASE("DiT respacing keeps the original timesteps and rebuilds the betas", "[samplers]") {
  auto base = NoiseSchedule::linear();
  for (std::string spec : {"250", "ddim50", "10,15,20", "999"}) {
    INFO("spec " << spec);
    auto r = respace(base, spec);
    REQUIRE(r.timestep_map == ints(fx("respace/" + spec + "/map")));
    require_close(r.schedule.betas, fx("respace/" + spec + "/betas"), "betas", 1e-12);
    for (std::size_t i = 0; i < r.timestep_map.size(); ++i)
      REQUIRE(r.schedule.abar(static_cast<std::int64_t>(i)) == Approx(base.abar(r.timestep_map[i])).epsilon(1e-12));
    auto order = r.sampling_timesteps();
    REQUIRE(order.front() == r.timestep_map.back());
    REQUIRE(order.back() == 0);
  }
  // Walking the respaced schedule by index is the same chain as walking the base schedule by kept timestep.
  auto r = respace(base, "250");
  auto out = torch::cat({out_in(0), fx("inputs/var_values")}, 1);
  DDPMOptions dit{Prediction::eps, DDPMVariance::learned_range};
  for (std::int64_t i : {249, 100, 1}) {
    INFO("respaced index " << i);
    auto spaced = ddpm_step(r.schedule, dit, out, sample_in(), i, i - 1, out_in(1));
    auto based = ddpm_step(base, dit, out, sample_in(), r.timestep_map[i], r.timestep_map[i - 1], out_in(1));
    require_close(spaced.prev_sample, based.prev_sample, "prev_sample", 1e-6);
  }
  CHECK(space_timesteps(10, "").size() == 10);
  // "N" respacing is diffusers' linspace spacing (DiT's accumulated stride rounds differently for N = 999).
  CHECK(r.sampling_timesteps() == spaced_timesteps(1000, 250, Spacing::linspace));
  CHECK(space_timesteps(1000, "999") != [] {
    auto v = spaced_timesteps(1000, 999, Spacing::linspace);
    return std::vector<std::int64_t>(v.rbegin(), v.rend());
  }());
  CHECK(msg_of([] { space_timesteps(1000, "ddim999"); }).find("ddim999") != std::string::npos);
  CHECK(msg_of([] { space_timesteps(1000, "2000"); }).find("2000") != std::string::npos);
  CHECK(msg_of([] { space_timesteps(1000, "25,x"); }).find("'x'") != std::string::npos);
}

TEST_CASE("prediction conversions invert the prediction targets", "[samplers]") {
  torch::manual_seed(3);
  auto x0 = torch::randn({3, 2, 4, 4}), eps = torch::randn({3, 2, 4, 4});
  auto s = NoiseSchedule::linear();
  auto t = torch::tensor({0, 500, 999}, torch::kLong);
  auto x_t = add_noise(s, x0, eps, t);
  auto abar = s.abar(t);
  require_close(x_t[1], std::sqrt(s.abar(500)) * x0[1] + std::sqrt(1 - s.abar(500)) * eps[1], "add_noise");
  for (auto p : {Prediction::eps, Prediction::v, Prediction::x0}) {
    INFO("prediction " << prediction_name(p));
    CHECK(prediction_by_name(prediction_name(p)) == p);
    auto target = prediction_target(p, x0, eps, abar);
    auto back = to_x0_eps(p, target, x_t, abar);
    require_close(back.x0, x0, "x0", 1e-4);  // x0 -> eps divides by sqrt(1 - abar_0) ~ 0.01
    require_close(back.eps, eps, "eps", 1e-3);
    auto one = to_x0_eps(p, target[2], x_t[2], s.abar(999));
    require_close(one.x0, x0[2], "scalar abar x0", 1e-4);
  }
  CHECK(prediction_by_name("v_prediction") == Prediction::v);
  CHECK(prediction_by_name("sample") == Prediction::x0);
  CHECK(msg_of([] { prediction_by_name("score"); }).find("'score'") != std::string::npos);
  auto split = split_learned_sigma(torch::cat({x0, eps}, 1), 2);
  CHECK(torch::equal(split.out, x0));
  CHECK(torch::equal(split.var_values, eps));
  CHECK(msg_of([&] { split_learned_sigma(x0, 2); }).find("[3, 2, 4, 4]") != std::string::npos);
}

TEST_CASE("DDPM steps match DDPMScheduler", "[samplers]") {
  auto x = sample_in();
  struct Case {
    std::string name;
    NoiseSchedule schedule;
    DDPMOptions options;
    std::int64_t n;
    Spacing spacing;
    std::int64_t offset;
    torch::Tensor out;
  };
  std::vector<Case> cases = {
      {"ddpm_dit",
       NoiseSchedule::linear(),
       {Prediction::eps, DDPMVariance::learned_range, false},
       50,
       Spacing::linspace,
       0,
       torch::cat({out_in(0), fx("inputs/var_values")}, 1)},
      {"ddpm_small_v",
       NoiseSchedule::scaled_linear(),
       {Prediction::v, DDPMVariance::fixed_small, true},
       20,
       Spacing::leading,
       1,
       out_in(0)},
      {"ddpm_large_cos",
       NoiseSchedule::cosine(),
       {Prediction::x0, DDPMVariance::fixed_large, false},
       10,
       Spacing::trailing,
       0,
       out_in(0)},
  };
  for (const auto& c : cases) {
    auto ts = spaced_timesteps(1000, c.n, c.spacing, c.offset);
    REQUIRE(ts == ints(fx(c.name + "/timesteps")));
    for (std::size_t k = 0; k < ts.size(); ++k) {
      std::string step = c.name + "/step" + std::to_string(k);
      if (!has(step + "/prev")) continue;
      INFO(step << " t = " << ts[k]);
      auto noise = has(step + "/noise") ? fx(step + "/noise") : torch::Tensor();
      auto r = ddpm_step(c.schedule, c.options, c.out, x, ts[k], next_t(ts, k), noise);
      require_close(r.x0, fx(step + "/x0"), "x0");
      require_close(r.prev_sample, fx(step + "/prev"), "prev_sample");
    }
  }
}

TEST_CASE("DDIM steps match DDIMScheduler", "[samplers]") {
  auto x = sample_in();
  struct Case {
    std::string name;
    NoiseSchedule schedule;
    DDIMOptions options;
    std::int64_t n;
    Spacing spacing;
    std::int64_t offset;
  };
  std::vector<Case> cases = {
      {"ddim_eta0", NoiseSchedule::scaled_linear(), {Prediction::eps, 0.0, false, false}, 50, Spacing::leading, 1},
      {"ddim_eta1_v", NoiseSchedule::scaled_linear(), {Prediction::v, 1.0, false, false}, 10, Spacing::trailing, 0},
      {"ddim_x0_clip", NoiseSchedule::linear(), {Prediction::x0, 0.5, true, true}, 25, Spacing::leading, 0},
  };
  for (const auto& c : cases) {
    auto ts = spaced_timesteps(1000, c.n, c.spacing, c.offset);
    REQUIRE(ts == ints(fx(c.name + "/timesteps")));
    auto t_prev = ints(fx(c.name + "/t_prev"));  // diffusers' t - T/n, per recorded step
    std::size_t j = 0;
    for (std::size_t k = 0; k < ts.size(); ++k) {
      std::string step = c.name + "/step" + std::to_string(k);
      if (!has(step + "/prev")) continue;
      INFO(step << " t = " << ts[k]);
      CHECK(std::max<std::int64_t>(t_prev[j], -1) == next_t(ts, k));  // the same chain as ours here
      auto noise = has(step + "/noise") ? fx(step + "/noise") : torch::Tensor();
      auto r = ddim_step(c.schedule, c.options, out_in(0), x, ts[k], t_prev[j++], noise);
      require_close(r.x0, fx(step + "/x0"), "x0");
      require_close(r.prev_sample, fx(step + "/prev"), "prev_sample");
    }
  }
}

TEST_CASE("Euler and Euler ancestral steps match diffusers", "[samplers]") {
  auto x = sample_in(), out = out_in(0);
  struct Case {
    std::string name;
    bool ancestral;
    Prediction p;
    std::int64_t n;
    Spacing spacing;
    std::int64_t offset;
  };
  std::vector<Case> cases = {
      {"euler_linspace", false, Prediction::eps, 30, Spacing::linspace, 0},
      {"euler_trailing_v", false, Prediction::v, 4, Spacing::trailing, 0},
      {"euler_a", true, Prediction::eps, 20, Spacing::linspace, 0},
      {"euler_a_leading_v", true, Prediction::v, 25, Spacing::leading, 1},
  };
  auto s = NoiseSchedule::scaled_linear();
  for (const auto& c : cases) {
    INFO(c.name);
    auto steps = sigma_steps(s, c.n, c.spacing, c.offset);
    REQUIRE(steps.timesteps == doubles(fx(c.name + "/timesteps")));
    require_close(steps.sigmas, fx(c.name + "/sigmas"), "sigmas");
    CHECK(steps.init_noise_sigma == Approx(fx(c.name + "/init_noise_sigma").item<double>()).epsilon(1e-6));
    for (std::size_t k = 0; k < steps.timesteps.size(); ++k) {
      std::string step = c.name + "/step" + std::to_string(k);
      if (!has(step + "/prev")) continue;
      INFO(step << " sigma = " << steps.sigmas[k]);
      double sigma = steps.sigmas[k], next = steps.sigmas[k + 1];
      require_close(x / std::sqrt(sigma * sigma + 1), fx(step + "/model_input"), "scale_model_input");
      auto r = c.ancestral ? euler_ancestral_step(c.p, out, x, sigma, next, fx(step + "/noise"))
                           : euler_step(c.p, out, x, sigma, next);
      require_close(r.x0, fx(step + "/x0"), "x0");
      require_close(r.prev_sample, fx(step + "/prev"), "prev_sample");
    }
  }
}

TEST_CASE("DPM-Solver++(2M) chain matches DPMSolverMultistepScheduler", "[samplers]") {
  auto s = NoiseSchedule::scaled_linear();
  for (auto [name, p, n, spacing, offset] : {std::tuple{"dpmpp", Prediction::eps, 6, Spacing::linspace, 0},
                                             std::tuple{"dpmpp_leading_v", Prediction::v, 5, Spacing::leading, 1}}) {
    std::string c = name;
    auto ts = dpm_solver_timesteps(1000, n, spacing, offset);
    REQUIRE(ts == ints(fx(c + "/timesteps")));
    std::vector<double> sigmas;
    for (auto t : ts) sigmas.push_back(s.sigma(t));
    sigmas.push_back(0.0);
    require_close(sigmas, fx(c + "/sigmas"), c + " sigmas");
    torch::Tensor x0_prev, chained = fx(c + "/x0");
    for (std::size_t i = 0; i < ts.size(); ++i) {
      INFO(c << " step " << i << " t = " << ts[i]);
      auto x = fx(c + "/x" + std::to_string(i));
      auto x0 = to_x0_eps(p, out_in(static_cast<int>(i)), x, s.abar(ts[i])).x0;
      auto next = dpmpp_2m_step(x, x0, sigmas[i], sigmas[i + 1], x0_prev, i > 0 ? sigmas[i - 1] : 0.0);
      require_close(next, fx(c + "/x" + std::to_string(i + 1)), "prev_sample");
      auto x0_chained = to_x0_eps(p, out_in(static_cast<int>(i)), chained, s.abar(ts[i])).x0;
      chained = dpmpp_2m_step(chained, x0_chained, sigmas[i], sigmas[i + 1], x0_prev, i > 0 ? sigmas[i - 1] : 0.0);
      x0_prev = x0;
    }
    require_close(chained, fx(c + "/x" + std::to_string(ts.size())), "chained");
  }
}

TEST_CASE("LCM steps match LCMScheduler", "[samplers]") {
  auto s = NoiseSchedule::scaled_linear();
  LCMOptions o;
  o.set_alpha_to_one = false;
  auto ts = lcm_timesteps(1000, 4);
  REQUIRE(ts == ints(fx("lcm/timesteps")));
  for (std::size_t k = 0; k < ts.size(); ++k) {
    std::string step = "lcm/step" + std::to_string(k);
    INFO(step << " t = " << ts[k]);
    auto noise = has(step + "/noise") ? fx(step + "/noise") : torch::Tensor();
    REQUIRE(noise.defined() == (k + 1 < ts.size()));
    auto r = lcm_step(s, o, out_in(0), sample_in(), ts[k], next_t(ts, k), noise);
    require_close(r.x0, fx(step + "/x0"), "denoised");
    require_close(r.prev_sample, fx(step + "/prev"), "prev_sample");
  }
}

TEST_CASE("full sampling loops match diffusers-style loops with the same seed", "[samplers]") {
  const std::vector<std::int64_t> shape = {2, 4, 4, 4};
  auto lin = NoiseSchedule::linear(), sd = NoiseSchedule::scaled_linear();
  auto start = [&](const std::string& name, double init_sigma, Rng& rng) {
    auto x = rng.randn(shape) * init_sigma;
    require_close(x, fx("loop_" + name + "/init"), name + " initial noise", 1e-6);
    return x;
  };
  SECTION("DDPM learned range (DiT)") {
    Rng rng(1234);
    auto x = start("ddpm_dit", 1.0, rng);
    CHECK(torch::equal(x, fx("loop_ddpm_dit/init")));  // Rng draws the bits torch.Generator draws
    DDPMOptions o{Prediction::eps, DDPMVariance::learned_range, false};
    x = sample_ddpm(lin, o, toy(true), x, spaced_timesteps(1000, 20, Spacing::linspace), rng);
    require_close(x, fx("loop_ddpm_dit/final"), "final");
  }
  SECTION("DDIM eta 1") {
    Rng rng(1234);
    auto x = start("ddim_eta1", 1.0, rng);
    DDIMOptions o{Prediction::eps, 1.0, false, false};
    x = sample_ddim(sd, o, toy(), x, spaced_timesteps(1000, 10, Spacing::leading, 1), rng);
    require_close(x, fx("loop_ddim_eta1/final"), "final");
  }
  SECTION("Euler") {
    Rng rng(1234);
    auto steps = sigma_steps(sd, 10, Spacing::linspace);
    auto x = start("euler", steps.init_noise_sigma, rng);
    x = sample_euler(Prediction::eps, toy(), x, steps);
    require_close(x, fx("loop_euler/final"), "final");
  }
  SECTION("Euler ancestral") {
    Rng rng(1234);
    auto steps = sigma_steps(sd, 8, Spacing::trailing);
    auto x = start("euler_a", steps.init_noise_sigma, rng);
    x = sample_euler_ancestral(Prediction::eps, toy(), x, steps, rng);
    require_close(x, fx("loop_euler_a/final"), "final");
  }
  SECTION("DPM-Solver++(2M)") {
    Rng rng(1234);
    auto x = start("dpmpp", 1.0, rng);
    x = sample_dpmpp_2m(sd, Prediction::eps, toy(), x, dpm_solver_timesteps(1000, 10));
    require_close(x, fx("loop_dpmpp/final"), "final");
  }
  SECTION("LCM") {
    Rng rng(1234);
    auto x = start("lcm", 1.0, rng);
    LCMOptions o;
    o.set_alpha_to_one = false;
    std::int64_t calls = 0;
    x = sample_lcm(sd, o, toy(), x, lcm_timesteps(1000, 4), rng,
                   [&](std::int64_t step, std::int64_t steps, const torch::Tensor&, const torch::Tensor&) {
                     CHECK(step == calls++);
                     CHECK(steps == 4);
                   });
    CHECK(calls == 4);
    require_close(x, fx("loop_lcm/final"), "final");
  }
}

namespace {

// Data ~ N(mu, s^2) per element: E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar), returned
// in prediction type p. s = 0 is a single data point. t must be an integer timestep.
Denoiser gaussian_data_denoiser(const NoiseSchedule& sched, const torch::Tensor& mu, double s, Prediction p) {
  return [&sched, mu, s, p](const torch::Tensor& x, const torch::Tensor& t) {
    double a = sched.abar(static_cast<std::int64_t>(std::lround(t[0].item<double>())));
    auto eps = std::sqrt(1 - a) * (x - std::sqrt(a) * mu) / (a * s * s + 1 - a);
    auto x0 = (x - std::sqrt(1 - a) * eps) / std::sqrt(a);
    switch (p) {
      case Prediction::eps: return eps;
      case Prediction::v: return std::sqrt(a) * eps - std::sqrt(1 - a) * x0;
      case Prediction::x0: return x0;
    }
    return eps;
  };
}

}  // namespace

TEST_CASE("samplers land on a single data point with the exact denoiser", "[samplers]") {
  auto s = NoiseSchedule::scaled_linear();
  auto point = torch::linspace(-1, 1, 2 * 4 * 4 * 4, torch::kDouble).reshape({2, 4, 4, 4});
  Rng rng(5);
  for (auto p : {Prediction::eps, Prediction::v, Prediction::x0}) {
    INFO("prediction " << prediction_name(p));
    auto f = gaussian_data_denoiser(s, point, 0.0, p);
    auto noise = rng.randn({2, 4, 4, 4}, torch::kDouble);
    for (std::int64_t n : {1, 10, 50}) {
      INFO(n << " steps");
      auto ts = spaced_timesteps(1000, n, Spacing::trailing);
      CHECK(test::max_abs_diff(sample_ddim(s, {p}, f, noise, ts, rng), point) < 1e-6);
      CHECK(test::max_abs_diff(sample_ddpm(s, {p}, f, noise, ts, rng), point) < 1e-6);
      CHECK(test::max_abs_diff(sample_lcm(s, {p}, f, noise, ts, rng), point) < 1e-3);  // c_skip(t_last) ~ 1e-5
      auto steps = sigma_steps(s, n, Spacing::trailing);
      CHECK(test::max_abs_diff(sample_euler(p, f, noise * steps.init_noise_sigma, steps), point) < 1e-6);
      CHECK(test::max_abs_diff(sample_euler_ancestral(p, f, noise * steps.init_noise_sigma, steps, rng), point) < 1e-6);
      if (n > 1)
        CHECK(test::max_abs_diff(sample_dpmpp_2m(s, p, f, noise, spaced_timesteps(1000, n, Spacing::trailing)), point) <
              1e-6);
    }
  }
}

TEST_CASE("ODE samplers carry N(0, 1) noise to a Gaussian data distribution", "[samplers]") {
  auto s = NoiseSchedule::linear();
  const double mu = 0.5, sd = 0.5;
  auto mean = torch::full({4096, 1, 1, 1}, mu, torch::kDouble);
  auto f = gaussian_data_denoiser(s, mean, sd, Prediction::eps);
  Rng rng(11);
  auto noise = rng.randn({4096, 1, 1, 1}, torch::kDouble);
  // 100 steps ending at t = 0. (These solvers' discretisation error on this target is a few percent of sd at
  // 100 steps: DDIM/Euler shrink the spread, DPM++(2M) on uniform-t steps overshoots it; ancestral DDPM
  // needs more steps, so it runs DiT's 250.)
  auto ts = spaced_timesteps(1000, 100, Spacing::linspace);
  auto steps = sigma_steps(s, 100, Spacing::leading);
  for (auto [name, x] :
       {std::pair{"DDIM", sample_ddim(s, {}, f, noise, ts, rng)},
        std::pair{"DPM++2M", sample_dpmpp_2m(s, Prediction::eps, f, noise, ts)},
        std::pair{"Euler", sample_euler(Prediction::eps, f, noise * steps.init_noise_sigma, steps)},
        std::pair{"DDPM 250", sample_ddpm(s, {}, f, noise, respace(s, "250").sampling_timesteps(), rng)}}) {
    INFO(name << ": mean " << x.mean().item<double>() << ", std " << x.std().item<double>());
    CHECK(std::abs(x.mean().item<double>() - mu) < 0.01);
    CHECK(std::abs(x.std().item<double>() - sd) < 0.03);
  }
}

TEST_CASE("samplers reject bad timesteps and output shapes, naming them", "[samplers]") {
  auto s = NoiseSchedule::linear();
  Rng rng(0);
  auto x = torch::zeros({1, 4, 2, 2});
  auto id = [](const torch::Tensor& x, const torch::Tensor&) { return x; };
  CHECK(msg_of([&] { sample_ddim(s, {}, id, x, {10, 20}, rng); }).find("10 then 20") != std::string::npos);
  CHECK(msg_of([&] { sample_ddpm(s, {}, id, x, {1000}, rng); }).find("timestep 1000") != std::string::npos);
  auto three = [](const torch::Tensor& x, const torch::Tensor&) { return torch::zeros({1, 3, 2, 2}); };
  CHECK(msg_of([&] { sample_ddim(s, {}, three, x, {10}, rng); }).find("[1, 3, 2, 2]") != std::string::npos);
  DDPMOptions learned{Prediction::eps, DDPMVariance::learned_range};
  CHECK(msg_of([&] { sample_ddpm(s, learned, id, x, {10}, rng); }).find("8 channels") != std::string::npos);
  CHECK(msg_of([&] { ddpm_step(s, {}, x, x, 10, 5, {}); }).find("noise") != std::string::npos);
  // A learned-sigma output (2C channels) is accepted by the samplers that only need the prediction.
  auto doubled = [](const torch::Tensor& x, const torch::Tensor&) { return torch::cat({x, x}, 1); };
  CHECK(sample_ddim(s, {}, doubled, x, {10, 0}, rng).sizes() == x.sizes());
}
