// Test-time adaptation: the DDA projection on the shipped Shapes model, the tta_sda and tta_eval jobs.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/shapes.h"
#include "data/shapes_data.h"
#include "distill/tta.h"
#include "helpers.h"

using namespace atelier;

namespace {

struct Shipped {
  DiTModelInfo info;
  DiT model{nullptr};
  Shipped() { model = load_dit_model(test::source_path("assets/models/dit_shapes.safetensors"), &info); }
};

shapes::Batch test_images(const DiTModelInfo& info, std::int64_t count) {
  const auto data = from_json<ShapesData>(info.data);
  return shapes::make_batch(data.spec(32), 2, 0, count);
}

}  // namespace

TEST_CASE("DDA projection keeps a clean image's class and its low frequencies", "[tta]") {
  Shipped s;
  auto batch = test_images(s.info, 16);
  ShapesClassifier probe =
      ShapesClassifier::load(test::source_path("assets/models/probe.safetensors"), s.info.class_names, "classifier");
  ProjectionSettings p;
  p.steps = 25;
  Rng rng(0);
  auto projected = dda_project(s.model, s.info, batch.images, p, rng);
  REQUIRE(projected.sizes() == batch.images.sizes());
  // The classifier's answer on the projection is its answer on the image (DDA's premise on clean inputs).
  const auto before = probe.logits(batch.images).argmax(1);
  const auto after = probe.logits(projected).argmax(1);
  CHECK(after.eq(before).sum().item<std::int64_t>() >= 13);
  // Guidance pulls the low frequencies toward the input: closer than the same projection unguided.
  ProjectionSettings free = p;
  free.guidance = 0;
  Rng rng2(0);
  auto unguided = dda_project(s.model, s.info, batch.images, free, rng2);
  namespace F = torch::nn::functional;
  auto low = [](const torch::Tensor& x) { return F::avg_pool2d(x, F::AvgPool2dFuncOptions(4)); };
  const double guided_gap = (low(projected) - low(batch.images)).abs().mean().item<double>();
  const double free_gap = (low(unguided) - low(batch.images)).abs().mean().item<double>();
  CHECK(guided_gap < free_gap);
  // Deterministic by seed.
  Rng rng3(0);
  CHECK(test::max_abs_diff(dda_project(s.model, s.info, batch.images, p, rng3), projected) == 0.0);
}

TEST_CASE("DDA projection: a downsample factor that does not divide the image is a named error", "[tta]") {
  Shipped s;
  auto batch = test_images(s.info, 2);
  ProjectionSettings p;
  p.downsample = 3;
  Rng rng(0);
  CHECK_THROWS_WITH(dda_project(s.model, s.info, batch.images, p, rng), Catch::Matchers::Contains("downsample"));
  p.downsample = 4;
  p.start = 1000;
  CHECK_THROWS_WITH(dda_project(s.model, s.info, batch.images, p, rng), Catch::Matchers::Contains("project_t"));
}

namespace {

nlohmann::json tiny_sda_job(const std::filesystem::path& base) {
  return {{"kind", "tta_sda"},
          {"model", base.string()},
          {"classifier", test::source_path("assets/models/probe.safetensors").string()},
          {"per_class", 4},
          {"sampler", "ddim"},
          {"sample_steps", 10},
          {"project_steps", 8},
          {"steps", 40},
          {"batch", 4},
          {"checkpoint_every", 2},
          {"downsample", 2}};
}

}  // namespace

TEST_CASE("tta_sda: SIGKILL, then --resume, ends with the uninterrupted classifier", "[tta][resume][cli]") {
  test::TempDir dir;
  auto base = test::tiny_base_model(dir);
  test::check_kill_and_resume(tiny_sda_job(base), "sda_classifier.safetensors");
}

TEST_CASE("tta_eval: Shapes-C table, grid and named errors; sda uses the tta_sda classifier", "[tta][cli]") {
  test::TempDir dir;
  auto base = test::tiny_base_model(dir);
  auto sda = tiny_sda_job(base);
  sda["steps"] = 4;
  REQUIRE(test::run_job_file(dir, sda, "sda").exit_code == 0);
  // The synthetic set says what it is (the studio's Models list shows its kind and classes).
  const auto synthetic = safetensors::Reader(dir / "sda" / "synthetic.safetensors").header().metadata;
  CHECK(synthetic.at("atelier.kind") == "sda_synthetic");
  CHECK_THAT(synthetic.at("classes"), Catch::Contains("circle"));
  nlohmann::json job = {{"kind", "tta_eval"},
                        {"model", base.string()},
                        {"classifier", test::source_path("assets/models/probe.safetensors").string()},
                        {"sda_classifier", (dir / "sda" / "sda_classifier.safetensors").string()},
                        {"clip", test::source_path("assets/models/clip_shapes.safetensors").string()},
                        {"methods", {"source", "dda", "dda_ensemble", "sda", "zero_shot", "tpt", "difftpt"}},
                        {"tpt_views", 7},
                        {"diff_aug_views", 4},
                        {"diffusion_views", 4},
                        {"diffusion_steps", 2},
                        {"corruptions", {"gaussian_noise", "contrast"}},
                        {"count", 6},
                        {"project_steps", 3},
                        {"downsample", 2}};
  auto r = test::run_job_file(dir, job, "eval");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto results = nlohmann::json::parse(read_file(dir / "eval" / "results.json"));
  for (const char* set : {"clean", "gaussian_noise", "contrast"})
    for (const char* m : {"source", "dda", "dda_ensemble", "sda", "zero_shot", "tpt", "difftpt"}) {
      const double acc = results["sets"][set][m]["accuracy"].get<double>();
      CHECK(acc >= 0.0);
      CHECK(acc <= 1.0);
      CHECK(results["sets"][set][m]["seconds_per_image"].get<double>() > 0.0);
    }
  CHECK(results["mean"].contains("sda"));
  CHECK(results["mean"].contains("difftpt"));
  // The shipped zero-shot classifier knows circles from squares on clean images.
  CHECK(results["sets"]["clean"]["zero_shot"]["accuracy"].get<double>() >= 0.5);
  CHECK(std::filesystem::exists(dir / "eval" / "grid.png"));
  CHECK(read_file(dir / "eval" / "results.md").find("| gaussian_noise |") != std::string::npos);

  auto bad = job;
  bad["corruptions"] = {"gaussian_noise", "rain"};
  r = test::run_job_file(dir, bad, "bad1");
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("corruptions") != std::string::npos);
  CHECK(r.output.find("rain") != std::string::npos);
  bad = job;
  bad.erase("sda_classifier");
  r = test::run_job_file(dir, bad, "bad2");
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("sda_classifier") != std::string::npos);
  // A Shapes-C folder as `atelier shapes --corruption all` writes it: one test set per corruption.
  auto written = test::run_cli("shapes " + (dir / "shapes-c").string() +
                               " --preset 'shipped base' --corruption all --severity 3 --count 4");
  REQUIRE(written.exit_code == 0);
  nlohmann::json folder_job = {{"kind", "tta_eval"},
                               {"model", test::source_path("assets/models/dit_shapes.safetensors").string()},
                               {"classifier", test::source_path("assets/models/probe.safetensors").string()},
                               {"methods", {"source"}},
                               {"images", (dir / "shapes-c").string()}};
  r = test::run_job_file(dir, folder_job, "folder");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto folder_results = nlohmann::json::parse(read_file(dir / "folder" / "results.json"));
  CHECK(folder_results["sets"].size() == 15);
  CHECK(folder_results["sets"]["fog"]["images"] == 4);

  bad = job;
  bad["images"] = (dir / "missing").string();
  r = test::run_job_file(dir, bad, "bad3");
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("does not exist") != std::string::npos);
}

TEST_CASE("TPT restarts from the initial prompt for every image and leaves the model unchanged", "[tta][tpt]") {
  torch::manual_seed(0);
  ClipConfig config;
  config.vision_width = 8;
  config.embed_dim = 16;
  config.transformer_width = 16;
  config.transformer_layers = 1;
  config.transformer_heads = 2;
  ClipModel clip(config);
  clip->eval();
  const std::vector<std::string> classes = {"circle", "square", "star"};
  Rng data(1);
  auto images = data.rand({2, 3, 32, 32}) * 2 - 1;
  TptSettings s;
  s.views = 15;
  s.select = 0.25;
  s.lr = 0.5;  // large, so a context carried over would change the second answer
  s.steps = 2;
  const auto before = clip->parameters();
  std::vector<torch::Tensor> saved;
  for (const auto& p : before) saved.push_back(p.clone());

  Rng together(7);
  auto both = tpt_probs(clip, classes, images, s, together);
  Rng apart(7);
  auto first = tpt_probs(clip, classes, images.narrow(0, 0, 1), s, apart);
  auto second = tpt_probs(clip, classes, images.narrow(0, 1, 1), s, apart);
  REQUIRE(both.sizes() == std::vector<std::int64_t>{2, 3});
  CHECK(test::max_abs_diff(both, torch::cat({first, second})) == 0.0);
  // Tuning moved the prediction away from the zero-shot one (the entropy step did something).
  auto zero_shot = torch::softmax(clip->zero_shot_logits(images, classes), 1);
  CHECK(test::max_abs_diff(both, zero_shot) > 1e-4);
  const auto after = clip->parameters();
  for (std::size_t i = 0; i < saved.size(); ++i) CHECK(test::max_abs_diff(after[i], saved[i]) == 0.0);
  for (const auto& p : after) CHECK(p.requires_grad());  // frozen only while tuning

  // AugMix views (TPT outside ImageNet): AugMix images of the same crops, in [-1, 1]; TPT runs on them.
  Rng r1(3), r2(3);
  const auto crops = random_views(images[0], 6, 0.5, r1);
  const auto mixed = augmix_views(images[0], 6, 0.5, r2);
  CHECK(mixed.sizes() == crops.sizes());
  CHECK(mixed.abs().max().item<double>() <= 1.0);
  CHECK(test::max_abs_diff(mixed, crops) > 0.05);
  TptSettings augmixed = s;
  augmixed.augment = "augmix";
  Rng r3(7);
  CHECK(tpt_probs(clip, classes, images, augmixed, r3).sizes() == both.sizes());

  // DiffTPT asks the diffusion model for its views once per image, and keeps the output shape.
  int calls = 0;
  DiffusionViews fake = [&](const torch::Tensor& image, std::int64_t count, Rng& rng) {
    ++calls;
    return (image.unsqueeze(0).expand({count, -1, -1, -1}) + 0.1 * rng.randn({count, 3, 32, 32})).clamp(-1, 1);
  };
  s.aug_views = 7;
  s.diffusion_views = 8;
  Rng r(3);
  auto diff = tpt_probs(clip, classes, images, s, r, fake);
  CHECK(calls == 2);
  CHECK(diff.sizes() == both.sizes());
  CHECK(torch::allclose(diff.sum(1), torch::ones({2}), 1e-5, 1e-5));
}

TEST_CASE("random_views: crops and flips at the image's size", "[tta][tpt]") {
  Rng rng(0);
  auto image = torch::linspace(-1, 1, 3 * 16 * 16).view({3, 16, 16});
  auto views = random_views(image, 5, 0.5, rng);
  REQUIRE(views.sizes() == std::vector<std::int64_t>{5, 3, 16, 16});
  CHECK(views.min().item<double>() >= -1.0 - 1e-6);
  CHECK(views.max().item<double>() <= 1.0 + 1e-6);
  // Deterministic by the generator's state; different draws give different crops.
  Rng again(0);
  CHECK(test::max_abs_diff(random_views(image, 5, 0.5, again), views) == 0.0);
  CHECK(test::max_abs_diff(views[0], views[1]) > 1e-3);
}
