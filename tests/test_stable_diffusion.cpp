// Stable Diffusion text-to-image: a tiny random diffusers pipeline (scripts/make_sd_fixtures.py) loaded
// from its folder reproduces diffusers' whole DDIM loop with guidance from the same prompts and seed, and
// the `sample` job draws prompts as a grid, with its errors.
#include <catch2/catch.hpp>

#include "adapters/adapter_file.h"
#include "adapters/lora_files.h"
#include "adapters/sd_tuning.h"
#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "data/presets.h"
#include "diffusion/stable_diffusion.h"
#include "studio/workspace.h"
#include "tests/helpers.h"

using namespace atelier;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path fixture(const std::string& name) {
  return test::source_path("tests/fixtures/sd/" + name);
}
fs::path vocabulary() {
  return test::source_path("assets/text/bpe_simple_vocab_16e6.txt.gz");
}

// The request the fixture's diffusers loop ran: prompts, negative prompt, DDIM steps, guidance, seed.
TextToImage fixture_request(const TensorFile& io) {
  const json request = json::parse(io.metadata.at("request"));
  TextToImage r;
  r.prompts = request["prompts"].get<std::vector<std::string>>();
  r.negative_prompt = request["negative_prompt"].get<std::string>();
  r.sampler.sampler = "ddim";
  r.sampler.steps = request["steps"].get<std::int64_t>();
  r.sampler.cfg_scale = request["guidance"].get<double>();
  r.seed = request["seed"].get<std::uint64_t>();
  return r;
}

}  // namespace

TEST_CASE("Stable Diffusion: a diffusers folder reproduces diffusers' DDIM text-to-image loop", "[sd][parity]") {
  const TensorFile io = safetensors::load(fixture("io.safetensors"));
  const json request = json::parse(io.metadata.at("request"));
  StableDiffusionModel sd = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  CHECK(sd.info.format == "diffusers folder");
  CHECK(sd.info.prediction == Prediction::eps);
  CHECK(sd.info.steps_offset == 1);
  CHECK_FALSE(sd.info.set_alpha_to_one);
  CHECK(sd.info.default_size == 16);  // sample_size 8 x the VAE's factor 2

  TextToImage r;
  r.prompts = request["prompts"].get<std::vector<std::string>>();
  r.negative_prompt = request["negative_prompt"].get<std::string>();
  r.sampler.sampler = "ddim";
  r.sampler.steps = request["steps"].get<std::int64_t>();
  r.sampler.cfg_scale = request["guidance"].get<double>();
  r.seed = request["seed"].get<std::uint64_t>();
  const auto latents = text_to_latents(sd, r);
  CHECK(latents.sizes() == io.tensors.at("latents").sizes());
  CHECK(test::relative_diff(latents, io.tensors.at("latents")) <= 1e-5);
  const auto images = text_to_image(sd, r);
  CHECK(test::relative_diff(images, io.tensors.at("images")) <= 1e-5);

  // Another seed, and no guidance, give other latents (the check above is not vacuous).
  r.seed += 1;
  CHECK(test::max_abs_diff(text_to_latents(sd, r), io.tensors.at("latents")) > 1e-2);

  // Sizes must fit the VAE and the UNet: multiples of 4 here (VAE factor 2 x one UNet downsampling).
  r.height = 18;
  CHECK_THROWS_WITH(text_to_latents(sd, r), Contains("field 'height'") && Contains("not a multiple of 4"));
  r.height = 24;
  r.width = 32;
  CHECK(text_to_latents(sd, r).sizes() == torch::IntArrayRef({2, 4, 12, 16}));
}

TEST_CASE("sample job: Stable Diffusion prompts as a grid, and the errors of mixing prompts and classes", "[sd][cli]") {
  test::TempDir dir;
  json job = {{"kind", "sample"},
              {"model", fixture("tiny").string()},
              {"prompts", {"a red circle", "a cat, watercolor"}},
              {"negative_prompt", "blurry"},
              {"per_class", 2},
              {"steps", 2},
              {"sampler", "euler"},
              {"tokenizer", vocabulary().string()},
              {"probe", ""}};
  auto r = test::run_job_file(dir, job, "sd");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(dir / "sd" / "samples.png"));
  CHECK_THAT(read_file(dir / "sd" / "log.jsonl"), Contains("Stable Diffusion"));

  json with_classes = job;
  with_classes["classes"] = {"circle"};
  auto bad = test::run_job_file(dir, with_classes, "bad1");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("field 'classes'") && Contains("give prompts, not classes"));

  json no_prompts = job;
  no_prompts.erase("prompts");
  auto bad2 = test::run_job_file(dir, no_prompts, "bad2");
  CHECK(bad2.exit_code == 1);
  CHECK_THAT(bad2.output, Contains("field 'prompts'"));

  json dit = {
      {"kind", "sample"}, {"model", test::tiny_base_model(dir, 0).string()}, {"prompts", {"a cat"}}, {"probe", ""}};
  auto bad3 = test::run_job_file(dir, dit, "bad3");
  CHECK(bad3.exit_code == 1);
  CHECK_THAT(bad3.output, Contains("field 'prompts'") && Contains("class-conditional"));

  json missing_vocab = job;
  missing_vocab["tokenizer"] = (dir / "nope.txt.gz").string();
  auto bad4 = test::run_job_file(dir, missing_vocab, "bad4");
  CHECK(bad4.exit_code == 1);
  CHECK_THAT(bad4.output, Contains("'tokenizer'") && Contains("does not exist"));
}

TEST_CASE("Stable Diffusion LoRAs: diffusers' PEFT file (conv LoRA, metadata scales) and a kohya file match diffusers",
          "[sd][lora][parity]") {
  const TensorFile io = safetensors::load(fixture("io.safetensors"));
  TextToImage r = fixture_request(io);
  const auto base = io.tensors.at("latents");
  for (const auto& [file, key] : std::vector<std::pair<std::string, std::string>>{
           {"lora/pytorch_lora_weights.safetensors", "latents_peft"}, {"lora/kohya.safetensors", "latents_kohya"}}) {
    INFO(file);
    StableDiffusionModel sd = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
    const LoRAWeights w = read_lora_file(fixture(file), lora_layer_paths(*sd.model));
    const LoRACompatibility c = check_lora(w, *sd.model);
    CHECK(c.ok());
    CHECK(w.unresolved.empty());
    bool unet = false, text = false;
    for (const auto& [layer, lw] : w.layers) {
      unet |= layer.rfind("unet.", 0) == 0;
      text |= layer.rfind("text_encoder.text_model.", 0) == 0;
    }
    CHECK((unet && text));
    if (key == "latents_peft") {
      // The resnets' 3x3 conv1 carries a conv LoRA; scales come from the file's metadata (unet 4/2, text 1/2).
      CHECK(w.layers.at("unet.down_blocks.0.resnets.0.conv1").down.dim() == 4);
      CHECK(w.layers.at("unet.down_blocks.0.resnets.0.conv1").alpha == Approx(4.0));
      CHECK(w.layers.at("text_encoder.text_model.encoder.layers.0.self_attn.q_proj").alpha == Approx(1.0));
    }
    merge_lora_files(*sd.model, {fixture(file).string()}, {});
    const auto latents = text_to_latents(sd, r);
    CHECK(test::relative_diff(latents, io.tensors.at(key)) <= 1e-5);
    CHECK(test::max_abs_diff(latents, base) > 1e-2);  // the LoRA changes the result
  }

  // The report and the sample job take them directly.
  auto report =
      test::run_cli("inspect " + fixture("lora/kohya.safetensors").string() + " --base " + fixture("tiny").string());
  INFO(report.output);
  CHECK(report.exit_code == 0);
  CHECK_THAT(report.output, Contains("kohya LoRA") && Contains("unmatched:  0") && Contains("mismatched: 0"));
  test::TempDir dir;
  json job = {{"kind", "sample"},
              {"model", fixture("tiny").string()},
              {"prompts", {"a red circle"}},
              {"adapters", {fixture("lora/pytorch_lora_weights.safetensors").string()}},
              {"adapter_weights", {0.5}},
              {"per_class", 1},
              {"steps", 2},
              {"tokenizer", vocabulary().string()}};
  auto run = test::run_job_file(dir, job, "lora");
  INFO(run.output);
  CHECK(run.exit_code == 0);
  json other = job;
  other["adapters"] = {test::source_path("tests/fixtures/lora/dit/peft/adapter_model.safetensors").string()};
  other["adapter_weights"] = json::array();
  auto bad = test::run_job_file(dir, other, "bad");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("field 'adapters'") && Contains("do not fit the model"));
}

TEST_CASE("Stable Diffusion single files (LDM names; .safetensors and a torch.save .ckpt) give the folder's images",
          "[sd][parity]") {
  const TensorFile io = safetensors::load(fixture("io.safetensors"));
  const TextToImage r = fixture_request(io);
  // What shapes cannot tell of the tiny model (SD's defaults are 32 GroupNorm groups).
  StableDiffusionLoadOptions o{vocabulary(), "auto"};
  o.unet_base = unet_config_from_diffusers(load_json_file(fixture("tiny/unet/config.json")), "unet config");
  o.vae_base.norm_num_groups = 4;
  for (const char* file : {"tiny_ldm.safetensors", "tiny_ldm.ckpt"}) {
    INFO(file);
    CHECK(is_stable_diffusion(fixture(file)));
    StableDiffusionModel sd = load_stable_diffusion(fixture(file), o);
    CHECK(sd.info.format == "single file (LDM names)");
    CHECK(sd.info.unet_file_dtype == torch::kHalf);
    CHECK(test::relative_diff(text_to_latents(sd, r), io.tensors.at("latents")) <= 1e-5);
    keep_file_dtype(sd);  // the UNet stored in float16 computes the same (its values are float16 already)
    CHECK(sd.model->unet->conv_in->weight.scalar_type() == torch::kHalf);
    CHECK(test::relative_diff(text_to_latents(sd, r), io.tensors.at("latents")) <= 1e-5);
  }
  CHECK_FALSE(is_stable_diffusion(test::source_path("assets/models/dit_shapes.safetensors")));
  CHECK(read_model_file_info(fixture("tiny_ldm.safetensors")).kind == "stable diffusion");  // the Models list

  // Errors name the file: settings the weights do not fit, and a missing tensor (by its diffusers name).
  CHECK_THROWS_WITH(load_stable_diffusion(fixture("tiny_ldm.safetensors"), {vocabulary(), "auto"}),
                    Contains("tiny_ldm.safetensors"));
  test::TempDir dir;
  TensorFile f = safetensors::load(fixture("tiny_ldm.safetensors"));
  f.tensors.erase("model.diffusion_model.input_blocks.1.0.in_layers.0.weight");
  safetensors::save(dir / "broken.safetensors", f.tensors);
  CHECK_THROWS_WITH(load_stable_diffusion(dir / "broken.safetensors", o),
                    Contains("broken.safetensors") && Contains("down_blocks.0.resnets.0.norm1.weight"));
}

TEST_CASE(
    "lora on a Stable Diffusion base: a UNet LoRA from captioned images, written for kohya tools, resumes exactly",
    "[sd][lora][cli]") {
  test::TempDir dir;
  // 6 captioned images (class sub-folders + <image>.txt captions) at the tiny model's 16 px.
  write_shapes_folder({{"classes", {"circle", "star"}}, {"styles", {"night"}}}, 16, 6, dir / "art");
  json job = {{"kind", "lora"},
              {"base", fixture("tiny").string()},
              {"images", (dir / "art").string()},
              {"rank", 2},
              {"alpha", 4},
              {"steps", 8},
              {"batch", 4},
              {"checkpoint_every", 2},
              {"sample_every", 1000},
              {"sample_steps", 2},
              {"lr", 0.2},
              {"probe", ""},
              {"tokenizer", vocabulary().string()}};
  auto r = test::run_job_file(dir, job, "sd-lora");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* f : {"adapter.safetensors", "before.png", "after.png"}) CHECK(fs::exists(dir / "sd-lora" / f));
  CHECK_THAT(read_file(dir / "sd-lora" / "log.jsonl"), Contains("6 captioned images"));

  // The file is a kohya LoRA on the UNet's attention that fits the model and changes its samples.
  StableDiffusionModel sd = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  const LoRAWeights w = read_lora_file(dir / "sd-lora" / "adapter.safetensors", lora_layer_paths(*sd.model));
  CHECK(w.dialect == LoRADialect::Kohya);
  CHECK(w.unresolved.empty());
  CHECK(check_lora(w, *sd.model).ok());
  CHECK(w.layers.count("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k") == 1);
  const TensorFile io = safetensors::load(fixture("io.safetensors"));
  const TextToImage req = fixture_request(io);
  merge_lora_files(*sd.model, {(dir / "sd-lora" / "adapter.safetensors").string()}, {});
  const auto with_kohya = text_to_latents(sd, req);
  CHECK(test::max_abs_diff(with_kohya, io.tensors.at("latents")) > 1e-4);

  // Converted to diffusers' format (unet.* names, scales in lora_adapter_metadata), it gives the same model;
  // an Atelier adapter file needs an Atelier base.
  const std::string convert = "convert-lora " + (dir / "sd-lora" / "adapter.safetensors").string() + " ";
  auto conv =
      test::run_cli(convert + (dir / "peft.safetensors").string() + " --to peft --base " + fixture("tiny").string());
  INFO(conv.output);
  REQUIRE(conv.exit_code == 0);
  CHECK(safetensors::load(dir / "peft.safetensors").metadata.count("lora_adapter_metadata") == 1);
  StableDiffusionModel again = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  merge_lora_files(*again.model, {(dir / "peft.safetensors").string()}, {});
  CHECK(test::max_abs_diff(text_to_latents(again, req), with_kohya) < 1e-5);
  auto to_atelier =
      test::run_cli(convert + (dir / "a.safetensors").string() + " --to atelier --base " + fixture("tiny").string());
  CHECK(to_atelier.exit_code == 1);
  CHECK_THAT(to_atelier.output, Contains("convert a Stable Diffusion LoRA to peft or kohya"));

  // Killed and resumed, it ends with the uninterrupted adapter; a folder-less job is refused.
  job["steps"] = 60;
  test::check_kill_and_resume(job, "adapter.safetensors");
  // Orthogonal LoRA: two concepts in slots 0 and 1 have orthogonal down-projections (the frozen basis
  // columns) on every layer, so they merge by summation; sample takes both.
  json ortho = job;
  ortho["kind"] = "ortho_lora";
  ortho["steps"] = 4;
  std::vector<LoRAWeights> slots;
  for (int slot = 0; slot < 2; ++slot) {
    ortho["ortho_slot"] = slot;
    auto o = test::run_job_file(dir, ortho, "ortho" + std::to_string(slot));
    INFO(o.output);
    REQUIRE(o.exit_code == 0);
    slots.push_back(
        read_lora_file(dir / ("ortho" + std::to_string(slot)) / "adapter.safetensors", lora_layer_paths(*sd.model)));
  }
  REQUIRE(slots[0].layers.size() == slots[1].layers.size());
  for (const auto& [layer, a] : slots[0].layers) {
    INFO(layer);
    const auto& b = slots[1].layers.at(layer);
    CHECK(test::max_abs_diff(a.down.matmul(b.down.t()), torch::zeros({a.down.size(0), b.down.size(0)})) < 1e-5);
  }
  json both = {{"kind", "sample"},
               {"model", fixture("tiny").string()},
               {"prompts", {"a red circle"}},
               {"adapters",
                {(dir / "ortho0" / "adapter.safetensors").string(), (dir / "ortho1" / "adapter.safetensors").string()}},
               {"per_class", 1},
               {"steps", 2},
               {"tokenizer", vocabulary().string()}};
  auto merged = test::run_job_file(dir, both, "both");
  INFO(merged.output);
  CHECK(merged.exit_code == 0);
  json no_images = job;
  no_images.erase("images");
  auto bad2 = test::run_job_file(dir, no_images, "no-images");
  CHECK(bad2.exit_code == 1);
  CHECK_THAT(bad2.output, Contains("field 'images'"));
}

TEST_CASE(
    "difffit on a Stable Diffusion base: the UNet's biases and gammas from captioned images, applied back exactly, "
    "resumes exactly",
    "[sd][difffit][cli]") {
  test::TempDir dir;
  write_shapes_folder({{"classes", {"circle", "star"}}, {"styles", {"night"}}}, 16, 6, dir / "art");
  json job = {{"kind", "difffit"},
              {"base", fixture("tiny").string()},
              {"images", (dir / "art").string()},
              {"gamma_blocks", "all"},
              {"steps", 8},
              {"batch", 4},
              {"checkpoint_every", 2},
              {"sample_every", 1000},
              {"sample_steps", 2},
              {"lr", 0.01},
              {"ema_decay", 0.5},
              {"probe", ""},
              {"tokenizer", vocabulary().string()}};
  auto r = test::run_job_file(dir, job, "sd-difffit");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const fs::path file = dir / "sd-difffit" / "adapter.safetensors";
  for (const char* f : {"adapter.safetensors", "before.png", "after.png"}) CHECK(fs::exists(dir / "sd-difffit" / f));
  CHECK_THAT(read_file(dir / "sd-difffit" / "log.jsonl"), Contains("difffit on the Stable Diffusion UNet"));

  // The adapter holds every UNet bias and a gamma per branch of every transformer block, trained.
  const AdapterFile a = load_adapter(file);
  CHECK(a.info.method == AdapterMethod::DiffFit);
  const std::string block = "unet.down_blocks.0.attentions.0.transformer_blocks.0.";
  for (const std::string branch : {"attn1", "attn2", "ff"}) {
    INFO(branch);
    REQUIRE(a.tensors.count(block + "gamma_" + branch) == 1);
    CHECK(test::max_abs_diff(a.tensors.at(block + "gamma_" + branch), torch::ones({1})) > 1e-4);
  }
  REQUIRE(a.tensors.count("unet.conv_in.bias") == 1);
  CHECK(a.tensors.count("unet.conv_in.weight") == 0);

  // Applied to the base, the gammas fold into to_out.0 / ff.net.2 exactly: the folded UNet equals the
  // training-time form (gammas as scales on the branches, trained biases); weight 0 leaves the base.
  StableDiffusionModel trained = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  {
    torch::NoGradGuard no_grad;
    for (auto& item : trained.model->unet->named_modules())
      if (auto* b = dynamic_cast<UNetTransformerBlockImpl*>(item.value().get()))
        for (const char* branch : {"attn1", "attn2", "ff"}) b->add_gamma(branch);
    auto params = trained.model->named_parameters();
    for (const auto& [name, t] : a.tensors) params[name].copy_(t);
  }
  StableDiffusionModel folded = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  apply_sd_adapters(folded, {file.string()}, {});
  StableDiffusionModel zero = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  apply_sd_adapters(zero, {file.string()}, {0.0});
  StableDiffusionModel base = load_stable_diffusion(fixture("tiny"), {vocabulary(), "auto"});
  torch::manual_seed(3);
  const auto x = torch::randn({2, 4, 8, 8}), t = torch::tensor({10.0f, 700.0f});
  const auto context = torch::randn({2, 77, folded.model->unet->config().cross_attention_dim});
  torch::NoGradGuard no_grad;
  const auto reference = trained.model->unet->forward(x, t, context);
  CHECK(test::relative_diff(folded.model->unet->forward(x, t, context), reference) < 1e-5);
  CHECK(test::max_abs_diff(base.model->unet->forward(x, t, context), reference) > 1e-4);
  CHECK(test::max_abs_diff(zero.model->unet->forward(x, t, context), base.model->unet->forward(x, t, context)) < 1e-6);

  // `sample` takes it; a base with another UNet refuses it, naming the file; lora is the lora job's.
  json sample = {{"kind", "sample"},
                 {"model", fixture("tiny").string()},
                 {"prompts", {"a circle"}},
                 {"adapters", {file.string()}},
                 {"per_class", 1},
                 {"steps", 2},
                 {"tokenizer", vocabulary().string()}};
  auto s = test::run_job_file(dir, sample, "sample");
  INFO(s.output);
  CHECK(s.exit_code == 0);
  fs::copy(fixture("tiny"), dir / "other", fs::copy_options::recursive);
  const fs::path unet_file = dir / "other" / "unet" / "diffusion_pytorch_model.safetensors";
  TensorFile weights = safetensors::load(unet_file);
  weights.tensors.at("conv_in.bias").add_(1.0);
  fs::permissions(unet_file, fs::perms::owner_write, fs::perm_options::add);
  safetensors::save(unet_file, weights.tensors, weights.metadata);
  sample["model"] = (dir / "other").string();
  auto other = test::run_job_file(dir, sample, "other-sample");
  CHECK(other.exit_code == 1);
  CHECK_THAT(other.output, Contains("adapter.safetensors") && Contains("trained on another UNet"));
  json lora = job;
  lora["method"] = "lora";
  auto bad = test::run_job_file(dir, lora, "sd-lora-method");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("field 'method'") && Contains("lora job kind"));

  // Killed and resumed, it ends with the uninterrupted adapter.
  job["steps"] = 60;
  test::check_kill_and_resume(job, "adapter.safetensors");
}
