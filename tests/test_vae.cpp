// AutoencoderKL: parity with diffusers (fixtures written by scripts/make_vae_fixtures.py), the three key
// dialects, config detection and strict loading errors.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "diffusion/vae.h"
#include "tests/helpers.h"

using namespace atelier;
using atelier::test::max_abs_diff;
using atelier::test::source_path;

namespace {

std::filesystem::path fixture(const std::string& name) {
  return source_path("tests/fixtures/vae/" + name);
}

struct VAEFixture {
  VAEConfig config;
  TensorMap io;
};

VAEFixture load_io() {
  TensorFile file = safetensors::load(fixture("io.safetensors"));
  VAEFixture f;
  f.config = from_json<VAEConfig>(json::parse(file.metadata.at("config")));
  for (auto& [k, v] : file.tensors) f.io[k] = v.to(torch::kFloat);
  return f;
}

// Max abs difference relative to the reference's scale.
double rel_diff(const torch::Tensor& out, const torch::Tensor& ref) {
  return max_abs_diff(out, ref) / ref.abs().max().item<double>();
}

std::string load_error(AutoencoderKLImpl& vae, const TensorMap& tensors) {
  try {
    load_vae_state(vae, tensors, "test.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("VAE parameters are diffusers' SD AutoencoderKL keys and shapes", "[vae]") {
  json ref;
  std::ifstream(fixture("sd_keys.json")) >> ref;
  AutoencoderKL vae(vae_preset("sd"));
  TensorMap params = module_tensors(*vae);
  std::vector<std::string> missing, unexpected, wrong;
  for (const auto& [name, shape] : ref.items()) {
    auto it = params.find(name);
    if (it == params.end())
      missing.push_back(name);
    else if (it->second.sizes().vec() != shape.get<std::vector<std::int64_t>>())
      wrong.push_back(name);
  }
  for (const auto& [name, _] : params)
    if (!ref.contains(name)) unexpected.push_back(name);
  CHECK(missing.empty());
  CHECK(unexpected.empty());
  CHECK(wrong.empty());
  CHECK(params.size() == ref.size());

  VAEConfig detected = detect_vae_config(params);
  CHECK(to_json(detected) == to_json(vae_preset("sd")));
}

TEST_CASE("VAE matches diffusers AutoencoderKL in all three key dialects", "[vae]") {
  torch::NoGradGuard no_grad;
  VAEFixture f = load_io();
  const auto& image = f.io.at("image");
  const auto& latent = f.io.at("latent");
  torch::Tensor first_mean, first_decoded;
  for (const char* file :
       {"weights_diffusers.safetensors", "weights_old_attn.safetensors", "weights_ldm.safetensors"}) {
    INFO(file);
    AutoencoderKL vae(f.config);
    load_vae_state(*vae, safetensors::load(fixture(file)).tensors, file);
    vae->eval();
    DiagonalGaussian posterior = vae->encode(image);
    CHECK(posterior.mean.sizes() == f.io.at("mean").sizes());
    CHECK(rel_diff(posterior.mean, f.io.at("mean")) <= 1e-5);
    CHECK(rel_diff(posterior.logvar, f.io.at("logvar")) <= 1e-5);
    auto decoded = vae->decode(latent);
    CHECK(decoded.sizes() == f.io.at("decoded").sizes());
    CHECK(rel_diff(decoded, f.io.at("decoded")) <= 1e-5);
    if (!first_mean.defined()) {
      first_mean = posterior.mean;
      first_decoded = decoded;
    } else {
      CHECK(torch::equal(posterior.mean, first_mean));
      CHECK(torch::equal(decoded, first_decoded));
    }
  }
}

TEST_CASE("VAE key dialects are detected and translated", "[vae]") {
  VAEKeyDialect d{};
  auto diffusers = vae_tensors_to_diffusers(safetensors::load(fixture("weights_diffusers.safetensors")).tensors, &d);
  CHECK(d == VAEKeyDialect::Diffusers);
  auto old = vae_tensors_to_diffusers(safetensors::load(fixture("weights_old_attn.safetensors")).tensors, &d);
  CHECK(d == VAEKeyDialect::DiffusersOld);
  auto ldm = vae_tensors_to_diffusers(safetensors::load(fixture("weights_ldm.safetensors")).tensors, &d);
  CHECK(d == VAEKeyDialect::LDM);
  for (const auto* other : {&old, &ldm}) {
    REQUIRE(other->size() == diffusers.size());
    for (const auto& [k, v] : diffusers) {
      INFO(k);
      REQUIRE(other->count(k));
      CHECK(torch::equal(other->at(k), v));
    }
  }
}

TEST_CASE("VAE loads from a full LDM checkpoint's state_dict", "[vae]") {
  torch::NoGradGuard no_grad;
  VAEFixture f = load_io();
  TensorMap ckpt;  // as load_tensor_file flattens a Stable Diffusion .ckpt
  for (const auto& [k, v] : safetensors::load(fixture("weights_ldm.safetensors")).tensors) ckpt["state_dict." + k] = v;
  ckpt["state_dict.model.diffusion_model.input_blocks.0.0.weight"] = torch::zeros({2, 4, 3, 3});
  ckpt["state_dict.first_stage_model.loss.logvar"] = torch::zeros({});
  AutoencoderKL vae(f.config);
  load_vae_state(*vae, ckpt, "sd.ckpt");
  CHECK(rel_diff(vae->decode(f.io.at("latent")), f.io.at("decoded")) <= 1e-5);
}

TEST_CASE("detect_vae_config recovers the fixture's config from every dialect", "[vae]") {
  VAEFixture f = load_io();
  VAEConfig base;
  base.norm_num_groups = f.config.norm_num_groups;
  for (const char* file :
       {"weights_diffusers.safetensors", "weights_old_attn.safetensors", "weights_ldm.safetensors"}) {
    INFO(file);
    VAEConfig c = detect_vae_config(safetensors::load(fixture(file)).tensors, base);
    CHECK(to_json(c) == to_json(f.config));
  }
  AutoencoderKL vae = load_vae(fixture("weights_ldm.safetensors"), base);
  CHECK(vae->config().block_out_channels == std::vector<std::int64_t>{4, 8, 8});

  const TensorMap unrelated = {{"foo.weight", torch::zeros({2})}};
  CHECK_THROWS_WITH(detect_vae_config(unrelated),
                    Catch::Contains("encoder.conv_in.weight") && Catch::Contains("not an AutoencoderKL"));
}

TEST_CASE("VAE strict loading reports every bad key at once", "[vae]") {
  VAEFixture f = load_io();
  AutoencoderKL vae(f.config);
  auto tensors = safetensors::load(fixture("weights_diffusers.safetensors")).tensors;
  tensors["decoder.up_blocks.0.resnets.1.conv2.weight"] = torch::zeros({8, 8, 1, 1});
  tensors.erase("encoder.mid_block.attentions.0.to_q.bias");
  tensors["encoder.extra.weight"] = torch::zeros({1});
  std::string msg = load_error(*vae, tensors);
  CHECK_THAT(msg, Catch::Contains("test.safetensors"));
  CHECK_THAT(msg, Catch::Contains(
                      "'decoder.up_blocks.0.resnets.1.conv2.weight' has shape [8, 8, 1, 1], expected [8, 8, 3, 3]"));
  CHECK_THAT(msg, Catch::Contains("missing 'encoder.mid_block.attentions.0.to_q.bias'"));
  CHECK_THAT(msg, Catch::Contains("unexpected 'encoder.extra.weight'"));

  // LDM names: the error gives the diffusers key and the file's key.
  auto ldm = safetensors::load(fixture("weights_ldm.safetensors")).tensors;
  ldm["first_stage_model.decoder.up.2.block.0.conv1.weight"] = torch::zeros({8, 8, 3});
  msg = load_error(*vae, ldm);
  CHECK_THAT(msg, Catch::Contains("LDM names"));
  CHECK_THAT(msg, Catch::Contains("'decoder.up_blocks.0.resnets.0.conv1.weight' (file: "
                                  "'first_stage_model.decoder.up.2.block.0.conv1.weight') has shape [8, 8, 3]"));
}

TEST_CASE("VAE latents, posterior sampling and presets", "[vae]") {
  torch::NoGradGuard no_grad;
  VAEFixture f = load_io();
  AutoencoderKL vae(f.config);
  load_vae_state(*vae, safetensors::load(fixture("weights_diffusers.safetensors")).tensors, "fixture");
  const auto& image = f.io.at("image");
  const double s = f.config.scaling_factor;

  CHECK(max_abs_diff(vae->to_latent(image), s * f.io.at("mean")) <= 1e-5);
  CHECK(rel_diff(vae->from_latent(s * f.io.at("latent")), f.io.at("decoded")) <= 1e-5);

  DiagonalGaussian posterior = vae->encode(image);
  Rng a(3), b(3);
  auto za = posterior.sample(a), zb = posterior.sample(b);
  CHECK(torch::equal(za, zb));
  CHECK(max_abs_diff(za, posterior.mode()) > 1e-3);
  CHECK(posterior.kl().sizes() == torch::IntArrayRef{2});
  CHECK(torch::equal(vae->to_latent(image, a), s * posterior.sample(b)));

  CHECK_THROWS_WITH(vae->encode(torch::zeros({1, 3, 30, 32})), Catch::Contains("multiples of 4"));
  CHECK_THROWS_WITH(vae->decode(torch::zeros({1, 3, 8, 8})), Catch::Contains("expected [N, 4, h, w]"));

  AutoencoderKL tiny(vae_preset("shapes-f4"));
  CHECK(tiny->encode(torch::zeros({1, 3, 32, 32})).mean.sizes() == torch::IntArrayRef{1, 4, 8, 8});
  CHECK(tiny->decode(torch::zeros({1, 4, 8, 8})).sizes() == torch::IntArrayRef{1, 3, 32, 32});
  CHECK(to_json(from_json<VAEConfig>(to_json(vae_preset("sdxl")))) == to_json(vae_preset("sdxl")));
  CHECK_THROWS_WITH(vae_preset("sd3"), Catch::Contains("unknown VAE preset 'sd3'"));
  VAEConfig bad;
  bad.norm_num_groups = 24;
  CHECK_THROWS_WITH(AutoencoderKL(bad), Catch::Contains("norm_num_groups 24"));
}
