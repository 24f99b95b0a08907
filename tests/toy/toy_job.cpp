#include "tests/toy/toy_job.h"

#include <chrono>
#include <cmath>
#include <thread>

#include "core/atomic_file.h"
#include "core/rng.h"
#include "core/safetensors.h"

namespace atelier::test {
namespace {

torch::nn::Sequential make_mlp(std::int64_t width) {
  return torch::nn::Sequential(torch::nn::Linear(4, width), torch::nn::SiLU(), torch::nn::Linear(width, 2));
}

}  // namespace

void toy_regression_job(const ToyConfig& c, JobContext& ctx) {
  // Config -> build: a fixed teacher, the student, its EMA, AdamW and the data generator.
  torch::manual_seed(static_cast<std::uint64_t>(c.seed));
  auto teacher = make_mlp(8);
  auto model = make_mlp(c.width);
  auto ema = make_mlp(c.width);
  load_module_tensors(*ema, module_tensors(*model), "", "ema");
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(c.lr));
  Rng rng(static_cast<std::uint64_t>(c.seed) + 1);
  Rng val_rng(static_cast<std::uint64_t>(c.seed) + 2);
  const auto val_x = val_rng.randn({256, 4});
  const auto val_y = teacher->forward(val_x).detach();
  auto val_loss = [&] {
    torch::NoGradGuard no_grad;
    return torch::mse_loss(ema->forward(val_x), val_y).item<double>();
  };

  // Loop.
  TrainLoop loop(ctx, c.train, {{{"model.", model.get()}, {"ema.", ema.get()}}, &opt, &rng}, LrDecay::Cosine);
  loop.ema(*ema, *model, c.ema_decay);
  loop.every(
      c.val_every,
      [&](std::int64_t done) {
        ctx.report.progress("val", done, c.train.steps, {{"val_loss", val_loss()}});
      },
      true);
  loop.run([&](std::int64_t step) {
    if (c.step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(c.step_delay_ms));
    const auto x = rng.randn({c.train.batch, 4});
    auto loss = torch::mse_loss(model->forward(x), teacher->forward(x).detach());
    return TrainStep{step + 1 == c.nan_at_step ? loss * std::nan("") : loss};
  });

  // Finish.
  safetensors::save(ctx.path(c.output), module_tensors(*ema), {{"atelier.config", to_json(c).dump()}});
  ctx.report.artifact("model", ctx.path(c.output));
  const json metrics = {{"val_loss", val_loss()}};
  write_file_atomic(ctx.path("metrics.json"), metrics.dump(2) + "\n");
  ctx.report.metrics({{"val_loss", metrics["val_loss"].get<double>()}});
}

}  // namespace atelier::test
