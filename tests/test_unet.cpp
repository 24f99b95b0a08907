// UNet2DConditionModel: parity with diffusers (fixtures written by scripts/make_unet_fixtures.py) for an
// SD1-style and an SD2/LCM-style config, LDM single-file names, config detection and strict loading errors.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "diffusion/unet.h"
#include "tests/helpers.h"

using namespace atelier;
using atelier::test::max_abs_diff;
using atelier::test::source_path;
using atelier::test::TempDir;

namespace {

std::filesystem::path fixture(const std::string& name) {
  return source_path("tests/fixtures/unet/" + name);
}

TensorMap load_io(const std::string& model) {
  TensorMap io;
  for (auto& [k, v] : safetensors::load(fixture(model + "/io.safetensors")).tensors) io[k] = v.to(torch::kFloat);
  return io;
}

// Max abs difference relative to the reference's scale (at least 1).

torch::Tensor run(UNet2DConditionModelImpl& unet, const TensorMap& io, const torch::Tensor& t) {
  auto cond = io.count("timestep_cond") ? io.at("timestep_cond") : torch::Tensor();
  return unet.forward(io.at("sample"), t, io.at("encoder_hidden_states"), cond);
}

// What shapes cannot tell about the sd1 fixture (its config.json says the rest).
UNetLoadOptions sd1_base() {
  UNetLoadOptions o;
  o.base.sample_size = 16;
  o.base.attention_head_dim = {2};
  o.base.norm_num_groups = 4;
  return o;
}

std::string load_error(const std::filesystem::path& path, const UNetLoadOptions& options = {}) {
  try {
    load_unet(path, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("UNet matches diffusers UNet2DConditionModel (SD1- and SD2-style configs)", "[unet]") {
  torch::NoGradGuard no_grad;
  for (const std::string model : {"sd1", "sd2"}) {
    INFO(model);
    UNetFileInfo info;
    UNet2DConditionModel unet = load_unet(fixture(model + "/diffusion_pytorch_model.safetensors"), {}, &info);
    CHECK(info.dialect == UNetKeyDialect::Diffusers);
    CHECK(info.config_source == fixture(model + "/config.json").string());
    CHECK(info.config.use_linear_projection == (model == "sd2"));
    const TensorMap io = load_io(model);
    auto out = run(*unet, io, io.at("timestep"));
    REQUIRE(out.sizes() == io.at("out").sizes());
    const double diff = test::relative_diff(out, io.at("out"));
    INFO("relative max abs diff " << diff);
    CHECK(diff <= 1e-5);

    // Stored in fp16 (the fixture's values are fp16-exact), computed in fp32: the same output up to the
    // run-to-run rounding differences of the CPU kernels.
    unet->to(torch::kHalf);
    auto from_fp16 = run(*unet, io, io.at("timestep"));
    CHECK(from_fp16.scalar_type() == torch::kFloat);
    CHECK(test::relative_diff(from_fp16, out) <= 1e-6);
  }
}

TEST_CASE("UNet loads LDM single-file names to the same output", "[unet]") {
  torch::NoGradGuard no_grad;
  const TensorMap io = load_io("sd1");
  UNetFileInfo info;
  UNet2DConditionModel unet = load_unet(fixture("sd1_ldm.safetensors"), sd1_base(), &info);
  CHECK(info.dialect == UNetKeyDialect::LDM);
  CHECK_THAT(info.config_source, Catch::Contains("detected from shapes"));
  const UNetConfig expected = unet_config_from_diffusers(load_json_file(fixture("sd1/config.json")), "sd1");
  CHECK(to_json(info.config) == to_json(expected));
  CHECK(test::relative_diff(run(*unet, io, io.at("timestep")), io.at("out")) <= 1e-5);

  // The key table alone: every LDM tensor lands on its diffusers name, bit for bit.
  UNetKeyDialect d{};
  std::map<std::string, std::string> origin;
  const TensorMap ldm = safetensors::load(fixture("sd1_ldm.safetensors")).tensors;
  const TensorMap diffusers = safetensors::load(fixture("sd1/diffusion_pytorch_model.safetensors")).tensors;
  const TensorMap renamed = unet_tensors_to_diffusers(ldm, &d, &origin);
  CHECK(d == UNetKeyDialect::LDM);
  REQUIRE(renamed.size() == diffusers.size());
  for (const auto& [k, v] : diffusers) {
    INFO(k);
    REQUIRE(renamed.count(k));
    CHECK(torch::equal(renamed.at(k), v));
  }
  CHECK(origin.at("down_blocks.0.resnets.0.norm1.weight") ==
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight");
  CHECK(origin.at("up_blocks.0.upsamplers.0.conv.weight") == "model.diffusion_model.output_blocks.1.1.conv.weight");

  // A full SD checkpoint (.ckpt flattened by load_tensor_file): only model.diffusion_model.* is taken.
  TensorMap ckpt;
  for (const auto& [k, v] : ldm) ckpt["state_dict." + k] = v;
  ckpt["state_dict.first_stage_model.encoder.conv_in.weight"] = torch::zeros({2, 3, 3, 3});
  ckpt["state_dict.cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch::zeros({4});
  ckpt["state_dict.model_ema.decay"] = torch::zeros({});
  UNet2DConditionModel from_ckpt(expected);
  load_unet_state(*from_ckpt, ckpt, "sd.ckpt");
  from_ckpt->eval();
  CHECK(test::relative_diff(run(*from_ckpt, io, io.at("timestep")), io.at("out")) <= 1e-5);
}

TEST_CASE("UNet timesteps: integer or float, per sample or one for the batch", "[unet]") {
  torch::NoGradGuard no_grad;
  const TensorMap io = load_io("sd1");
  UNet2DConditionModel unet = load_unet(fixture("sd1/diffusion_pytorch_model.safetensors"));
  const auto& t = io.at("timestep");  // whole numbers
  // Equal up to the run-to-run rounding differences of the CPU kernels.
  auto same = [](const torch::Tensor& a, const torch::Tensor& b) { return test::relative_diff(a, b) <= 1e-6; };
  auto ref = run(*unet, io, t);
  CHECK(same(run(*unet, io, t.to(torch::kLong)), ref));
  CHECK(same(run(*unet, io, t.to(torch::kInt)), ref));
  CHECK(same(run(*unet, io, t.to(torch::kDouble)), ref));

  // One timestep for the batch: a scalar or a [1] tensor broadcast over N.
  auto per_sample = run(*unet, io, torch::full({2}, 981, torch::kLong));
  CHECK(same(run(*unet, io, torch::scalar_tensor(981, torch::kLong)), per_sample));
  CHECK(same(run(*unet, io, torch::full({1}, 981.0)), per_sample));
  CHECK(test::relative_diff(per_sample[1], io.at("out")[1]) <= 1e-5);
  CHECK(max_abs_diff(per_sample[0], ref[0]) > 1e-3);  // the timestep matters

  CHECK_THROWS_WITH(run(*unet, io, torch::zeros({3})), Catch::Contains("timesteps for a batch of 2"));
  CHECK_THROWS_WITH(unet->forward(io.at("sample"), t, torch::zeros({2, 5, 7})),
                    Catch::Contains("encoder_hidden_states must be [2, L, 12]"));
  CHECK_THROWS_WITH(unet->forward(io.at("sample"), t, io.at("encoder_hidden_states"), torch::zeros({2, 6})),
                    Catch::Contains("no time_embedding.cond_proj"));
  UNet2DConditionModel lcm = load_unet(fixture("sd2/diffusion_pytorch_model.safetensors"));
  const TensorMap io2 = load_io("sd2");
  CHECK_THROWS_WITH(lcm->forward(io2.at("sample"), io2.at("timestep"), io2.at("encoder_hidden_states")),
                    Catch::Contains("needs timestep_cond [N, 6]"));
}

TEST_CASE("UNet config detection from weight shapes", "[unet]") {
  // The fixtures: everything shapes can tell.
  for (const std::string model : {"sd1", "sd2"}) {
    INFO(model);
    const UNetConfig ref = unet_config_from_diffusers(load_json_file(fixture(model + "/config.json")), model);
    UNetConfig base = ref;  // what shapes cannot tell
    base.block_out_channels = {1};
    base.cross_attention_dim = 1;
    base.use_linear_projection = !ref.use_linear_projection;
    base.time_cond_proj_dim = 0;
    base.down_block_types = base.up_block_types = {};
    const auto weights = safetensors::load(fixture(model + "/diffusion_pytorch_model.safetensors")).tensors;
    CHECK(to_json(detect_unet_config(weights, base)) == to_json(ref));
  }

  // SD1 vs SD2 by context width and proj_in rank decides the head counts.
  UNetConfig sd1 = unet_preset("sd15");
  sd1.block_out_channels = {64, 128};
  sd1.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  sd1.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  sd1.layers_per_block = 1;
  UNetConfig sd2 = sd1;
  sd2.cross_attention_dim = 1024;
  sd2.use_linear_projection = true;
  sd2.attention_head_dim = {1, 2};
  UNetConfig base;
  base.attention_head_dim = {4};
  const UNetConfig d1 = detect_unet_config(module_tensors(*UNet2DConditionModel(sd1)), base);
  CHECK(d1.attention_head_dim == std::vector<std::int64_t>{8});
  CHECK(!d1.use_linear_projection);
  CHECK(d1.cross_attention_dim == 768);
  const UNetConfig d2 = detect_unet_config(module_tensors(*UNet2DConditionModel(sd2)), base);
  CHECK(d2.attention_head_dim == std::vector<std::int64_t>{1, 2});  // head dim 64
  CHECK(d2.use_linear_projection);
  sd2.use_linear_projection = false;  // neither family: the base's heads
  CHECK(detect_unet_config(module_tensors(*UNet2DConditionModel(sd2)), base).attention_head_dim ==
        std::vector<std::int64_t>{4});

  CHECK_THROWS_WITH(detect_unet_config({{"foo.weight", torch::zeros({2})}}),
                    Catch::Contains("conv_in.weight") && Catch::Contains("not a UNet2DConditionModel"));
}

TEST_CASE("UNet presets and diffusers config.json", "[unet]") {
  const UNetConfig sd15 = unet_preset("sd15"), sd21 = unet_preset("sd21"), turbo = unet_preset("sd-turbo");
  CHECK(sd15.heads(0) == 8);
  CHECK(sd15.heads(3) == 8);
  CHECK(sd21.heads(0) == 5);
  CHECK(sd21.heads(3) == 20);
  CHECK(sd21.sample_size == 96);
  CHECK(turbo.sample_size == 64);
  CHECK(turbo.cross_attention_dim == 1024);
  CHECK(to_json(from_json<UNetConfig>(to_json(sd21))) == to_json(sd21));
  CHECK_THROWS_WITH(unet_preset("sdxl"), Catch::Contains("unknown UNet preset 'sdxl'"));

  json j = load_json_file(fixture("sd2/config.json"));
  const UNetConfig c = unet_config_from_diffusers(j, "config.json");
  CHECK(c.attention_head_dim == std::vector<std::int64_t>{2, 4});
  CHECK(c.time_cond_proj_dim == 6);
  CHECK(!c.flip_sin_to_cos);
  json sdxl = j;
  sdxl["addition_embed_type"] = "text_time";
  CHECK_THROWS_WITH(unet_config_from_diffusers(sdxl, "unet/config.json"),
                    Catch::Contains("unet/config.json") && Catch::Contains("'addition_embed_type'"));
  json heads = j;
  heads["num_attention_heads"] = 4;
  CHECK_THROWS_WITH(unet_config_from_diffusers(heads, "c.json"), Catch::Contains("'num_attention_heads'"));
  json unknown = j;
  unknown["fancy_option"] = true;
  CHECK_THROWS_WITH(unet_config_from_diffusers(unknown, "c.json"), Catch::Contains("unknown key 'fancy_option'"));
  json lists = j;
  lists["layers_per_block"] = {1, 1};
  CHECK(unet_config_from_diffusers(lists, "c.json").layers_per_block == 1);
  lists["layers_per_block"] = {1, 2};
  CHECK_THROWS_WITH(unet_config_from_diffusers(lists, "c.json"),
                    Catch::Contains("'layers_per_block' differs between entries"));
  json bad_heads = j;
  bad_heads["attention_head_dim"] = {3, 4};
  CHECK_THROWS_WITH(unet_config_from_diffusers(bad_heads, "c.json"),
                    Catch::Contains("attention_head_dim") && Catch::Contains("into 3 heads"));
}

TEST_CASE("UNet strict loading names the file and every bad key", "[unet]") {
  TempDir dir("atelier-test-unet");
  const auto weights = safetensors::load(fixture("sd1/diffusion_pytorch_model.safetensors")).tensors;

  SECTION("a missing key (diffusers file)") {
    std::filesystem::create_directories(dir / "unet");
    std::filesystem::copy_file(fixture("sd1/config.json"), dir / "unet/config.json");
    auto broken = weights;
    broken.erase("up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight");
    const auto path = dir / "unet/diffusion_pytorch_model.safetensors";
    safetensors::save(path, broken);
    const std::string msg = load_error(path);
    CHECK_THAT(msg, Catch::Contains(path.string()));
    CHECK_THAT(msg, Catch::Contains("missing 'up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight'"));
  }

  SECTION("a wrong shape (LDM single file)") {
    auto ldm = safetensors::load(fixture("sd1_ldm.safetensors")).tensors;
    ldm["model.diffusion_model.output_blocks.2.0.out_layers.3.weight"] = torch::zeros({8, 8, 1, 1});
    const auto path = dir / "model.safetensors";
    safetensors::save(path, ldm);
    const std::string msg = load_error(path, sd1_base());
    CHECK_THAT(msg, Catch::Contains(path.string() + " (LDM names)"));
    CHECK_THAT(msg, Catch::Contains("'up_blocks.1.resnets.0.conv2.weight' (file: "
                                    "'model.diffusion_model.output_blocks.2.0.out_layers.3.weight') has shape "
                                    "[8, 8, 1, 1], expected [8, 8, 3, 3]"));
  }

  SECTION("an unexpected key and a config that does not fit the weights") {
    auto extra = weights;
    extra["mid_block.attentions.0.extra.weight"] = torch::zeros({1});
    const auto path = dir / "x.safetensors";
    safetensors::save(path, extra);
    std::string msg = load_error(path, sd1_base());
    CHECK_THAT(msg, Catch::Contains(path.string()));
    CHECK_THAT(msg, Catch::Contains("unexpected 'mid_block.attentions.0.extra.weight'"));

    UNetLoadOptions wrong = sd1_base();
    wrong.config = unet_config_from_diffusers(load_json_file(fixture("sd2/config.json")), "sd2");
    msg = load_error(fixture("sd1/diffusion_pytorch_model.safetensors"), wrong);
    CHECK_THAT(msg, Catch::Contains("missing 'time_embedding.cond_proj.weight'"));
    CHECK_THAT(msg, Catch::Contains("proj_in.weight' has shape [8, 8, 1, 1], expected [8, 8]"));
  }
}
