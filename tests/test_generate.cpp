// The `sample` job end to end: Atelier models with Shapes metrics, latent DiTs in the official key layout
// decoded through a VAE file, and the errors a user meets on the way.
#include <ATen/Context.h>

#include <catch2/catch.hpp>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "diffusion/dit.h"
#include "diffusion/generate.h"
#include "diffusion/train_base.h"
#include "diffusion/vae.h"
#include "helpers.h"
#include "studio/job_registry.h"

using namespace atelier;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// A random latent DiT (4 channels, 8x8 latents) saved under official key names with no Atelier metadata,
// as a converted third-party checkpoint would be, and a tiny VAE (f4: 32x32 images) with its config.
void write_latent_models(const test::TempDir& dir) {
  torch::manual_seed(3);
  DiT dit(test::tiny_dit_config(32, 1, 8, 4, 3));
  {
    torch::NoGradGuard no_grad;  // leave adaLN-Zero so the output depends on the input
    for (auto& p : dit->parameters()) p.normal_(0, 0.05);
  }
  safetensors::save(dir / "dit.safetensors", module_tensors(*dit));
  VAEConfig vc = vae_preset("shapes-f4");
  AutoencoderKL vae(vc);
  safetensors::save(dir / "vae.safetensors", module_tensors(*vae), {{"vae.config", to_json(vc).dump()}});
}

}  // namespace

TEST_CASE("sample: a latent DiT without Atelier metadata decodes through a VAE file", "[generate][cli]") {
  test::TempDir dir;
  write_latent_models(dir);
  json job = {{"kind", "sample"},
              {"model", (dir / "dit.safetensors").string()},
              {"vae", (dir / "vae.safetensors").string()},
              {"classes", {"0", "2"}},
              {"per_class", 2},
              {"steps", 3},
              {"device", "cpu"}};
  auto r = test::run_job_file(dir, job, "latent");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const Image grid = load_image(dir / "latent/samples.png");
  CHECK(grid.width >= 2 * 64);  // two 32x32 decoded images per row, shown at 2x
  CHECK(grid.height >= 2 * 64);
  CHECK(read_png_text(dir / "latent/samples.png").count("atelier.config") == 1);
  CHECK_FALSE(fs::exists(dir / "latent/metrics.json"));  // not a Shapes model: no Shapes metrics

  // The same pipeline through the API: the grid's images are the VAE's decoding of the DiT's samples.
  DiTModelInfo info;
  DiT model = load_generator_model(dir / "dit.safetensors", &info);
  CHECK(info.class_names.size() == 3);
  CHECK(info.schedule == "linear");
  SamplerSettings s;
  s.steps = 3;
  Rng rng(0);
  auto z = generate(model, info, torch::tensor({0, 0}), s, rng);
  CHECK(z.sizes() == torch::IntArrayRef({2, 4, 8, 8}));
  AutoencoderKL vae = load_vae(dir / "vae.safetensors");
  CHECK(vae->config().norm_num_groups == 8);  // from the file's vae.config, not the SD default of 32
  torch::NoGradGuard no_grad;
  CHECK(vae->from_latent(z).sizes() == torch::IntArrayRef({2, 3, 32, 32}));
}

TEST_CASE("sample: bad model, VAE, class and device settings are named errors", "[generate][cli]") {
  test::TempDir dir;
  write_latent_models(dir);
  json job = {{"kind", "sample"}, {"model", (dir / "dit.safetensors").string()}, {"per_class", 1}, {"steps", 2}};

  auto no_vae = test::run_job_file(dir, job, "no-vae");
  CHECK(no_vae.exit_code == 1);
  CHECK_THAT(no_vae.output, Contains("field 'vae'") && Contains("4-channel latents"));

  json wrong_class = job;
  wrong_class["vae"] = (dir / "vae.safetensors").string();
  wrong_class["classes"] = {"7"};
  auto bad_class = test::run_job_file(dir, wrong_class, "bad-class");
  CHECK(bad_class.exit_code == 1);
  CHECK_THAT(bad_class.output, Contains("field 'classes'") && Contains("'7'"));

  json not_a_vae = job;
  not_a_vae["vae"] = (dir / "dit.safetensors").string();
  auto bad_vae = test::run_job_file(dir, not_a_vae, "bad-vae");
  CHECK(bad_vae.exit_code == 1);
  CHECK_THAT(bad_vae.output, Contains("field 'vae'") && Contains("not an AutoencoderKL"));

  if (!at::hasCUDA()) {
    json cuda = job;
    cuda["device"] = "cuda";
    auto no_cuda = test::run_job_file(dir, cuda, "no-cuda");
    CHECK(no_cuda.exit_code == 1);
    CHECK_THAT(no_cuda.output, Contains("field 'device'") && Contains("no CUDA device"));
  }
  json typo = job;
  typo["device"] = "gpu";
  auto bad_device = test::run_job_file(dir, typo, "bad-device");
  CHECK(bad_device.exit_code == 1);
  CHECK_THAT(bad_device.output, Contains("field 'device'") && Contains("'gpu'"));
}

TEST_CASE("sample: a train_base model gives a labelled grid and Shapes metrics", "[generate][cli]") {
  test::TempDir dir;
  auto trained = test::run_job_file(dir, test::tiny_base_job(), "base");
  INFO(trained.output);
  REQUIRE(trained.exit_code == 0);
  json job = {{"kind", "sample"},
              {"model", (dir / "base/model.safetensors").string()},
              {"probe", test::source_path("assets/models/probe.safetensors").string()},
              {"per_class", 2},
              {"steps", 2},
              {"reference_samples", 16}};
  auto r = test::run_job_file(dir, job, "grid");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const json m = load_json_file(dir / "grid/metrics.json");
  for (const char* key : {"probe_accuracy", "fd_shapes", "fd_shapes_floor", "sharpness", "reference_sharpness",
                          "patch_texture", "reference_patch_texture"})
    CHECK(m.contains(key));
  CHECK(m["patch_texture"].get<double>() > 0);
  CHECK(m["fd_shapes_floor"].get<double>() >= 0);
  CHECK(m["probe_accuracy"].get<double>() >= 0.0);
  CHECK(m["probe_accuracy"].get<double>() <= 1.0);
  // Per-class accuracies (two classes, equal rows) average to the overall one.
  const double per_class = (m["probe_accuracy/circle"].get<double>() + m["probe_accuracy/square"].get<double>()) / 2;
  CHECK(per_class == Approx(m["probe_accuracy"].get<double>()));
  const auto config = json::parse(read_png_text(dir / "grid/samples.png").at("atelier.config"));
  CHECK(config["per_class"] == 2);
}

namespace {

// The effective config saved in a shipped model equals its job file's (so the file reproduces the weights).
void check_trained_by(const fs::path& model, const json& job) {
  const json saved = json::parse(safetensors::Reader(model).header().metadata.at("atelier.config"));
  const JobKind& kind = JobRegistry::builtin().get(job.at("kind").get<std::string>());
  const json expected = kind.normalize(job);
  for (const auto& [key, value] : expected.items()) {
    // Where it ran and how previews were drawn (own noise, no training state) do not change the weights.
    if (key == "device" || key == "sample_every" || key == "sample_steps" || key == "cfg_scale") continue;
    INFO(key);
    if (!saved.contains(key)) {  // a field added after the model was trained: its default is what ran then
      const auto f =
          std::find_if(kind.fields.begin(), kind.fields.end(), [&](const FieldInfo& i) { return i.name == key; });
      REQUIRE(f != kind.fields.end());
      CHECK(value == f->default_value);
      continue;
    }
    CHECK(saved.at(key) == value);
  }
}

void check_samples(const fs::path& model, const json& overrides) {
  test::TempDir dir;
  json sample = {{"kind", "sample"}, {"model", model.string()}, {"per_class", 1}, {"steps", 2}, {"probe", ""}};
  sample.update(overrides);
  auto r = test::run_job_file(dir, sample, "grid");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(load_image(dir / "grid/samples.png").height > 0);
}

}  // namespace

TEST_CASE("The shipped base model was trained by assets/jobs/base.json and samples its classes", "[generate][assets]") {
  const auto path = test::source_path("assets/models/dit_shapes.safetensors");
  DiTModelInfo info;
  DiT model = load_dit_model(path, &info);
  const json job = load_json_file(test::source_path("assets/jobs/base.json"));
  CHECK(info.class_names == job["classes"].get<std::vector<std::string>>());
  CHECK(info.prediction == job["prediction"]);
  check_trained_by(path, job);
  check_samples(path, json::object());
}

TEST_CASE("The shipped 4-step student was distilled by assets/jobs/distill_4step.json from the shipped base",
          "[generate][assets]") {
  const auto path = test::source_path("assets/models/dit_shapes_4step.safetensors");
  const json job = load_json_file(test::source_path("assets/jobs/distill_4step.json"));
  CHECK(job.at("teacher") == "assets/models/dit_shapes.safetensors");
  DiTModelInfo student, teacher;
  load_dit_model(path, &student);
  load_dit_model(test::source_path("assets/models/dit_shapes.safetensors"), &teacher);
  CHECK(student.class_names == teacher.class_names);
  CHECK(student.dit.hidden_size == teacher.dit.hidden_size);
  CHECK(student.dit.depth == teacher.dit.depth);
  check_trained_by(path, job);
  check_samples(path, {{"sampler", "lcm"}, {"steps", 4}, {"cfg_scale", 1}});
}

TEST_CASE("Every shipped job file is valid for its kind", "[generate][assets]") {
  const auto& registry = JobRegistry::builtin();
  int files = 0;
  for (const auto& entry : fs::directory_iterator(test::source_path("assets/jobs"))) {
    if (entry.path().extension() != ".json") continue;
    INFO(entry.path().string());
    const json job = load_json_file(entry.path());
    REQUIRE(job.contains("kind"));
    CHECK_NOTHROW(registry.get(job["kind"].get<std::string>()).normalize(job));
    ++files;
  }
  CHECK(files >= 6);
}
