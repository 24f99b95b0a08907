// Ref: huggingface/diffusers v0.42.1 schedulers/scheduling_ddim.py (betas, set_timesteps);
//      facebookresearch/DiT diffusion/gaussian_diffusion.py, diffusion/respace.py.
#include "samplers/schedule.h"

#include <torch/torch.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numbers>
#include <set>

#include "core/error.h"
#include "samplers/sampler_util.h"

namespace atelier {
namespace {

torch::Tensor to_tensor(const std::vector<double>& v) {
  return torch::tensor(at::ArrayRef<double>(v), torch::kFloat64);
}

// Reshapes [N] per-sample coefficients to broadcast over x ([N, 1, 1, ...]) in x's dtype and device.
torch::Tensor per_sample(const torch::Tensor& c, const torch::Tensor& x) {
  std::vector<std::int64_t> shape(x.dim(), 1);
  shape[0] = c.size(0);
  return c.to(x.device(), x.scalar_type()).reshape(shape);
}

std::int64_t parse_count(std::string_view s, std::string_view spec) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 1)
    fail("timestep respacing '", spec, "': '", s, "' is not a positive step count");
  return v;
}

void check_steps(std::int64_t T, std::int64_t n) {
  if (n < 1 || n > T) fail("inference steps ", n, ": must be in [1, ", T, "] (the training steps)");
}

}  // namespace

Prediction prediction_by_name(std::string_view name) {
  if (name == "eps" || name == "epsilon") return Prediction::eps;
  if (name == "v" || name == "v_prediction") return Prediction::v;
  if (name == "x0" || name == "sample") return Prediction::x0;
  fail("prediction type '", name, "': expected eps, v or x0");
}

std::string_view prediction_name(Prediction p) {
  switch (p) {
    case Prediction::eps: return "eps";
    case Prediction::v: return "v";
    case Prediction::x0: return "x0";
  }
  return "?";
}

double NoiseSchedule::abar(std::int64_t t) const {
  if (t < 0) return 1.0;
  if (t >= size()) fail("timestep ", t, " is outside the schedule's ", size(), " training steps");
  return alphas_cumprod.data_ptr<double>()[t];
}

double NoiseSchedule::sigma(std::int64_t t) const {
  double a = abar(t);
  return std::sqrt((1.0 - a) / a);
}

torch::Tensor NoiseSchedule::sigmas() const {
  return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt();
}

torch::Tensor NoiseSchedule::abar(const torch::Tensor& t) const {
  auto idx = t.to(torch::kCPU, torch::kLong);
  if (idx.numel() > 0 && (idx.min().item<std::int64_t>() < 0 || idx.max().item<std::int64_t>() >= size()))
    fail("timesteps ", idx.min().item<std::int64_t>(), "..", idx.max().item<std::int64_t>(), " are outside the ",
         size(), " training steps");
  return alphas_cumprod.index_select(0, idx).to(t.device());
}

NoiseSchedule NoiseSchedule::from_betas(torch::Tensor betas) {
  betas = betas.to(torch::kCPU, torch::kFloat64).contiguous();
  if (betas.dim() != 1 || betas.size(0) < 1) fail("noise schedule betas: expected shape [T], got ", betas.sizes());
  const double* b = betas.data_ptr<double>();
  std::vector<double> abar(betas.size(0));
  double prod = 1.0;
  for (std::int64_t i = 0; i < betas.size(0); ++i) {
    if (!(b[i] > 0.0 && b[i] <= 1.0)) fail("noise schedule beta[", i, "] = ", b[i], ": must be in (0, 1]");
    prod *= 1.0 - b[i];
    abar[i] = prod;
  }
  return NoiseSchedule{betas, to_tensor(abar)};
}

NoiseSchedule NoiseSchedule::linear(std::int64_t T) {
  if (T < 2) fail("linear noise schedule: T = ", T, " training steps, need at least 2");
  double scale = 1000.0 / static_cast<double>(T);
  return linear(T, scale * 0.0001, scale * 0.02);
}

NoiseSchedule NoiseSchedule::linear(std::int64_t T, double beta_start, double beta_end) {
  if (T < 1) fail("linear noise schedule: T = ", T, " training steps");
  return from_betas(to_tensor(detail::np_linspace(beta_start, beta_end, T)));
}

NoiseSchedule NoiseSchedule::scaled_linear(std::int64_t T, double beta_start, double beta_end) {
  if (T < 1) fail("scaled_linear noise schedule: T = ", T, " training steps");
  auto b = detail::np_linspace(std::sqrt(beta_start), std::sqrt(beta_end), T);
  for (double& x : b) x = x * x;
  return from_betas(to_tensor(b));
}

NoiseSchedule NoiseSchedule::cosine(std::int64_t T, double max_beta) {
  if (T < 1) fail("cosine noise schedule: T = ", T, " training steps");
  auto alpha_bar = [](double s) {
    double c = std::cos((s + 0.008) / 1.008 * std::numbers::pi / 2);
    return c * c;
  };
  std::vector<double> b(T);
  for (std::int64_t i = 0; i < T; ++i) {
    double t1 = static_cast<double>(i) / T, t2 = static_cast<double>(i + 1) / T;
    b[i] = std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta);
  }
  return from_betas(to_tensor(b));
}

NoiseSchedule NoiseSchedule::by_name(std::string_view name, std::int64_t T) {
  if (name == "linear") return linear(T);
  if (name == "scaled_linear") return scaled_linear(T);
  if (name == "cosine" || name == "squaredcos_cap_v2") return cosine(T);
  fail("noise schedule '", name, "': expected linear, scaled_linear or cosine");
}

Spacing spacing_by_name(std::string_view name) {
  if (name == "leading") return Spacing::leading;
  if (name == "trailing") return Spacing::trailing;
  if (name == "linspace") return Spacing::linspace;
  fail("timestep spacing '", name, "': expected leading, trailing or linspace");
}

std::vector<double> detail::np_linspace(double start, double stop, std::int64_t n, bool endpoint) {
  // numpy/_core/function_base.py: y = arange(n) * step + start; y[-1] = stop.
  std::vector<double> y(std::max<std::int64_t>(n, 0));
  std::int64_t div = endpoint ? n - 1 : n;
  double delta = stop - start;
  double step = div > 0 ? delta / div : 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    double fi = static_cast<double>(i);
    y[i] = (div > 0 ? (step == 0.0 ? fi / div * delta : fi * step) : fi * delta) + start;
  }
  if (endpoint && n > 1) y[n - 1] = stop;
  return y;
}

std::vector<std::int64_t> spaced_timesteps(std::int64_t T, std::int64_t n, Spacing spacing, std::int64_t steps_offset) {
  check_steps(T, n);
  std::vector<std::int64_t> ts(n);
  switch (spacing) {
    case Spacing::leading: {
      std::int64_t ratio = T / n;
      for (std::int64_t i = 0; i < n; ++i) ts[i] = (n - 1 - i) * ratio + steps_offset;
      break;
    }
    case Spacing::trailing: {
      // numpy arange(T, 0, -T/n) fills start + i * ((start + step) - start).
      double start = static_cast<double>(T), step = -static_cast<double>(T) / static_cast<double>(n);
      double delta = (start + step) - start;
      for (std::int64_t i = 0; i < n; ++i) {
        double v = i == 1 ? start + step : start + static_cast<double>(i) * delta;
        ts[i] = static_cast<std::int64_t>(detail::round_half_even(v)) - 1;
      }
      break;
    }
    case Spacing::linspace: {
      auto y = detail::np_linspace(0.0, static_cast<double>(T - 1), n);
      for (std::int64_t i = 0; i < n; ++i) ts[i] = static_cast<std::int64_t>(detail::round_half_even(y[n - 1 - i]));
      break;
    }
  }
  return ts;
}

std::vector<std::int64_t> space_timesteps(std::int64_t T, std::string_view spec) {
  if (T < 1) fail("timestep respacing: T = ", T, " training steps");
  if (spec.empty()) return space_timesteps(T, std::to_string(T));
  if (spec.starts_with("ddim")) {
    std::int64_t want = parse_count(spec.substr(4), spec);
    for (std::int64_t stride = 1; stride < T; ++stride) {
      if ((T + stride - 1) / stride == want) {
        std::vector<std::int64_t> out;
        for (std::int64_t t = 0; t < T; t += stride) out.push_back(t);
        return out;
      }
    }
    fail("timestep respacing '", spec, "': cannot take exactly ", want, " of ", T, " steps with an integer stride");
  }
  std::vector<std::int64_t> counts;
  for (std::size_t pos = 0;;) {
    std::size_t comma = spec.find(',', pos);
    counts.push_back(parse_count(spec.substr(pos, comma - pos), spec));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  std::int64_t sections = static_cast<std::int64_t>(counts.size());
  std::int64_t size_per = T / sections, extra = T % sections, start = 0;
  std::set<std::int64_t> kept;
  for (std::int64_t i = 0; i < sections; ++i) {
    std::int64_t size = size_per + (i < extra ? 1 : 0), count = counts[i];
    if (size < count) fail("timestep respacing '", spec, "': cannot divide a section of ", size, " steps into ", count);
    double stride = count <= 1 ? 1.0 : static_cast<double>(size - 1) / static_cast<double>(count - 1);
    double cur = 0.0;
    for (std::int64_t k = 0; k < count; ++k, cur += stride)
      kept.insert(start + static_cast<std::int64_t>(detail::round_half_even(cur)));
    start += size;
  }
  return {kept.begin(), kept.end()};
}

std::vector<std::int64_t> Respacing::sampling_timesteps() const {
  return {timestep_map.rbegin(), timestep_map.rend()};
}

Respacing respace(const NoiseSchedule& base, std::string_view spec) {
  Respacing r;
  r.timestep_map = space_timesteps(base.size(), spec);
  std::vector<double> betas;
  double last = 1.0;
  for (std::int64_t t : r.timestep_map) {
    betas.push_back(1.0 - base.abar(t) / last);
    last = base.abar(t);
  }
  r.schedule = NoiseSchedule::from_betas(to_tensor(betas));
  return r;
}

X0Eps to_x0_eps(Prediction p, const torch::Tensor& out, const torch::Tensor& x_t, double abar) {
  double sa = std::sqrt(abar), s1 = std::sqrt(1.0 - abar);
  switch (p) {
    case Prediction::eps: return {(x_t - s1 * out) / sa, out};
    case Prediction::v: return {sa * x_t - s1 * out, sa * out + s1 * x_t};
    case Prediction::x0: return {out, (x_t - sa * out) / s1};
  }
  fail("unknown prediction type");
}

X0Eps to_x0_eps(Prediction p, const torch::Tensor& out, const torch::Tensor& x_t, const torch::Tensor& abar) {
  auto a = abar.to(torch::kFloat64);
  auto sa = per_sample(a.sqrt(), x_t), s1 = per_sample((1.0 - a).sqrt(), x_t);
  switch (p) {
    case Prediction::eps: return {(x_t - s1 * out) / sa, out};
    case Prediction::v: return {sa * x_t - s1 * out, sa * out + s1 * x_t};
    case Prediction::x0: return {out, (x_t - sa * out) / s1};
  }
  fail("unknown prediction type");
}

torch::Tensor prediction_target(Prediction p, const torch::Tensor& x0, const torch::Tensor& eps,
                                const torch::Tensor& abar) {
  auto a = abar.to(torch::kFloat64);
  switch (p) {
    case Prediction::eps: return eps;
    case Prediction::x0: return x0;
    case Prediction::v: return per_sample(a.sqrt(), x0) * eps - per_sample((1.0 - a).sqrt(), x0) * x0;
  }
  fail("unknown prediction type");
}

torch::Tensor add_noise(const NoiseSchedule& s, const torch::Tensor& x0, const torch::Tensor& noise,
                        const torch::Tensor& t) {
  if (t.dim() != 1 || t.size(0) != x0.size(0))
    fail("add_noise: timesteps of shape ", t.sizes(), " for a batch of shape ", x0.sizes());
  auto a = s.abar(t);
  return per_sample(a.sqrt(), x0) * x0 + per_sample((1.0 - a).sqrt(), x0) * noise;
}

LearnedSigma split_learned_sigma(const torch::Tensor& model_output, std::int64_t channels) {
  if (model_output.dim() < 2 || model_output.size(1) != 2 * channels)
    fail("learned-sigma model output of shape ", model_output.sizes(), ": expected ", 2 * channels,
         " channels (prediction | variance values) for ", channels, " sample channels");
  auto parts = model_output.split(channels, 1);
  return {parts[0], parts[1]};
}

}  // namespace atelier
