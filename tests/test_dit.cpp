// DiT: official key list (DiT-XL/2), parity with diffusers' DiTTransformer2DModel and with the official
// facebookresearch/DiT model (fixtures written by scripts/make_dit_fixtures.py), loading official .pt
// checkpoints and round trips, strict loading errors, pos_embed regeneration.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "core/training_state.h"
#include "diffusion/dit.h"
#include "diffusion/dit_keys.h"
#include "tests/helpers.h"

using namespace atelier;
using atelier::test::max_abs_diff;
using atelier::test::source_path;
using atelier::test::TempDir;

namespace {

std::filesystem::path fixture(const std::string& name) {
  return source_path("tests/fixtures/dit/" + name);
}

struct DiTFixture {
  DiTConfig config;  // diffusers' model: timestep_freq_shift 1
  torch::Tensor latents, timesteps, labels, sample;
};

DiTFixture load_io() {
  TensorFile file = safetensors::load(fixture("io.safetensors"));
  DiTFixture f;
  f.config = from_json<DiTConfig>(json::parse(file.metadata.at("config")));
  f.latents = file.tensors.at("latents").to(torch::kFloat);
  f.timesteps = file.tensors.at("timesteps");
  f.labels = file.tensors.at("labels");
  f.sample = file.tensors.at("sample");
  return f;
}

using atelier::test::relative_diff;

torch::Tensor run(DiT& model, const DiTFixture& f) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(f.latents, f.timesteps, f.labels);
}

// Every parameter from N(0, 0.1): the adaLN-Zero init would make outputs (and round trips) trivial.
void randomize(DiT& model, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : model->named_parameters())
    if (p.key() != "pos_embed") p.value().copy_(at::normal(0.0, 0.1, p.value().sizes(), gen));
}

std::string load_error(const std::filesystem::path& file, const DiTLoadOptions& options = {}) {
  try {
    load_dit(file, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

DiTConfig tiny_config() {
  DiTConfig c;
  c.input_size = 8;
  c.patch_size = 2;
  c.in_channels = 4;
  c.hidden_size = 128;  // dit_heads_for_width(128) = 4
  c.depth = 2;
  c.num_heads = 4;
  c.num_classes = 7;
  return c;
}

// MAE 2D sin-cos embedding written out: token h*G + w, channels [sin(w*om), cos(w*om), sin(h*om), cos(h*om)],
// om_k = 10000^(-k / (dim/4)), positions multiplied by `scale`.
torch::Tensor expected_pos_embed(std::int64_t dim, std::int64_t grid, double scale) {
  const std::int64_t q = dim / 4;
  auto out = torch::empty({grid * grid, dim}, torch::kDouble);
  auto a = out.accessor<double, 2>();
  for (std::int64_t h = 0; h < grid; ++h)
    for (std::int64_t w = 0; w < grid; ++w)
      for (std::int64_t k = 0; k < q; ++k) {
        const double om = std::pow(10000.0, -static_cast<double>(k) / static_cast<double>(q));
        const double pw = w * scale * om, ph = h * scale * om;
        a[h * grid + w][k] = std::sin(pw);
        a[h * grid + w][q + k] = std::cos(pw);
        a[h * grid + w][2 * q + k] = std::sin(ph);
        a[h * grid + w][3 * q + k] = std::cos(ph);
      }
  return out;
}

}  // namespace

TEST_CASE("DiT-XL/2 has the official state-dict keys, shapes and dtypes", "[dit]") {
  json ref;
  std::ifstream(fixture("dit_xl2_official_keys.json")) >> ref;
  REQUIRE(ref.is_array());
  const DiTConfig preset = dit_preset("DiT-XL/2");
  DiT model(preset);
  TensorMap tensors = module_tensors(*model);  // named_parameters + named_buffers

  std::vector<std::string> missing, wrong;
  std::set<std::string> listed;
  std::int64_t ref_total = 0;
  for (const auto& entry : ref) {
    const auto name = entry.at(0).get<std::string>();
    const auto shape = entry.at(1).get<std::vector<std::int64_t>>();
    listed.insert(name);
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    ref_total += n;
    auto it = tensors.find(name);
    if (it == tensors.end())
      missing.push_back(name);
    else if (it->second.sizes().vec() != shape || entry.at(2).get<std::string>() != "float32" ||
             it->second.scalar_type() != torch::kFloat)
      wrong.push_back(name);
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, _] : tensors)
    if (!listed.count(name)) unexpected.push_back(name);
  CHECK(missing.empty());
  CHECK(unexpected.empty());
  CHECK(wrong.empty());
  CHECK(tensors.size() == ref.size());
  CHECK(listed.size() == ref.size());

  std::int64_t total = 0;
  for (const auto& p : model->parameters()) total += p.numel();
  WARN("DiT-XL/2: " << tensors.size() << " tensors, " << total << " parameters including pos_embed");
  CHECK(total == ref_total);
  CHECK(total == 675129632);

  CHECK(to_json(detect_dit_config(tensors)) == to_json(preset));
}

TEST_CASE("DiT matches diffusers' DiTTransformer2DModel", "[dit]") {
  const DiTFixture f = load_io();
  REQUIRE(f.config.timestep_freq_shift == 1);
  REQUIRE(f.config.class_dropout_prob > 0);
  const TensorMap diffusers = safetensors::load(fixture("weights_diffusers.safetensors")).tensors;
  CHECK(detect_dit_dialect(diffusers) == DiTKeyDialect::Diffusers);

  std::vector<std::string> warnings;
  const TensorMap official = dit_from_diffusers(diffusers, f.config, &warnings);
  CHECK(warnings.empty());
  DiT model(f.config);
  load_module_tensors(*model, official, "", "diffusers fixture");
  CHECK(model->y_table->weight.size(0) == f.config.num_classes + 1);
  CHECK(relative_diff(run(model, f), f.sample) <= 1e-5);

  SECTION("the timestep frequency shift matters") {
    DiTConfig c = f.config;
    c.timestep_freq_shift = 0;
    DiT official_shift(c);
    load_module_tensors(*official_shift, official, "", "diffusers fixture");
    CHECK(max_abs_diff(run(official_shift, f), f.sample) > 1e-3);
  }
  SECTION("config detection from the translated weights") {
    DiTConfig base;
    base.input_size = f.config.input_size;
    base.timestep_freq_shift = 1;
    DiTConfig detected = detect_dit_config(official, base);
    CHECK(detected.num_heads == 1);  // 16 wide: not a preset width, so max(1, 16 / 64)
    detected.num_heads = f.config.num_heads;
    CHECK(to_json(detected) == to_json(f.config));
  }
  SECTION("load_dit: options, then a diffusers config.json next to the weights") {
    DiTFileInfo info;
    DiT loaded = load_dit(fixture("weights_diffusers.safetensors"), {f.config.num_heads, f.config.input_size}, &info);
    CHECK(info.dialect == DiTKeyDialect::Diffusers);
    CHECK(info.prefix.empty());
    CHECK(info.warnings.empty());
    CHECK(to_json(info.config) == to_json(f.config));
    CHECK(relative_diff(run(loaded, f), f.sample) <= 1e-5);

    TempDir dir("atelier-dit");
    std::filesystem::copy_file(fixture("weights_diffusers.safetensors"), dir / "diffusion_pytorch_model.safetensors");
    std::ofstream(dir / "config.json") << R"({"_class_name": "DiTTransformer2DModel", "sample_size": 8,
        "num_attention_heads": 2, "attention_head_dim": 8, "num_embeds_ada_norm": 10})";
    DiT from_dir = load_dit(dir / "diffusion_pytorch_model.safetensors", {}, &info);
    CHECK(to_json(info.config) == to_json(f.config));
    CHECK(relative_diff(run(from_dir, f), f.sample) <= 1e-5);
  }
  SECTION("differing per-block embedder copies: block 0's is used, with a warning") {
    TensorMap edited = diffusers;
    const std::string key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.weight";
    edited[key] = edited.at(key) + 1;
    const TensorMap t = dit_from_diffusers(edited, f.config, &warnings);
    REQUIRE(warnings.size() == 1);
    CHECK_THAT(warnings[0], Catch::Contains("transformer_blocks 1 differ"));
    CHECK(torch::equal(t.at("t_embedder.mlp.0.weight"), official.at("t_embedder.mlp.0.weight")));
    CHECK(t.size() == official.size());
  }
  SECTION("pos_embed: generated equals diffusers' buffer") {
    const TensorMap pt = load_tensor_file(fixture("official.pt")).tensors;
    CHECK(max_abs_diff(official.at("pos_embed"), pt.at("pos_embed")) <= 1e-6);
  }
}

TEST_CASE("official DiT .pt checkpoints load and match the official model", "[dit]") {
  const DiTFixture f = load_io();
  const torch::Tensor ref = safetensors::load(fixture("official_io.safetensors")).tensors.at("sample");
  DiTConfig expected = f.config;
  expected.timestep_freq_shift = 0;

  DiTFileInfo info;
  DiT model = load_dit(fixture("official.pt"), {f.config.num_heads}, &info);
  CHECK(info.dialect == DiTKeyDialect::Official);
  CHECK(info.prefix.empty());
  CHECK(to_json(info.config) == to_json(expected));
  CHECK(relative_diff(run(model, f), ref) <= 1e-5);

  // Same weights as the diffusers file through the C++ table (pos_embed: float32 sincos of either side).
  const TensorMap translated =
      dit_from_diffusers(safetensors::load(fixture("weights_diffusers.safetensors")).tensors, f.config);
  const TensorMap loaded = module_tensors(*model);
  REQUIRE(loaded.size() == translated.size());
  for (const auto& [name, t] : loaded) {
    INFO(name);
    if (name == "pos_embed")
      CHECK(max_abs_diff(t, translated.at(name)) <= 1e-6);
    else
      CHECK(torch::equal(t, translated.at(name).to(torch::kFloat)));
  }

  SECTION("train.py checkpoint {model, ema, opt, args}: the EMA weights") {
    DiTFileInfo train_info;
    DiT ema = load_dit(fixture("official_train.pt"), {f.config.num_heads}, &train_info);
    CHECK(train_info.prefix == "ema.");
    CHECK(to_json(train_info.config) == to_json(expected));
    for (const auto& [name, t] : module_tensors(*ema)) {
      INFO(name);
      CHECK(torch::equal(t, loaded.at(name)));
    }
    CHECK(torch::equal(run(ema, f), run(model, f)));
  }
}

TEST_CASE("DiT official-key files round-trip bit-identically; config detected from shapes", "[dit]") {
  DiTConfig a = tiny_config();
  DiTConfig b = tiny_config();
  b.hidden_size = 64;  // 1 head by width
  b.num_heads = 1;
  b.patch_size = 4;
  b.input_size = 16;
  b.in_channels = 3;
  b.depth = 3;
  b.mlp_ratio = 2;
  b.num_classes = 5;
  b.learn_sigma = false;
  b.final_conv = true;  // Atelier's border convolution is detected from its weights too
  TempDir dir("atelier-dit");
  int index = 0;
  for (const DiTConfig& c : {a, b}) {
    INFO(to_json(c).dump());
    DiT model(c);
    randomize(model, 11 + index);
    const TensorMap tensors = module_tensors(*model);
    CHECK(to_json(detect_dit_config(tensors)) == to_json(c));

    const auto path = dir / ("model" + std::to_string(index++) + ".safetensors");
    safetensors::save(path, tensors);
    DiTFileInfo info;
    DiT loaded = load_dit(path, {}, &info);
    CHECK(info.dialect == DiTKeyDialect::Official);
    CHECK(to_json(info.config) == to_json(c));
    const TensorMap back = module_tensors(*loaded);
    REQUIRE(back.size() == tensors.size());
    for (const auto& [name, t] : tensors) {
      INFO(name);
      CHECK(torch::equal(back.at(name), t));
    }
    torch::NoGradGuard no_grad;
    model->eval();
    auto x = torch::randn({2, c.in_channels, c.input_size, c.input_size});
    auto t = torch::tensor({3.0f, 700.0f});
    auto y = torch::tensor({std::int64_t{1}, c.num_classes});
    CHECK(torch::equal(model->forward(x, t, y), loaded->forward(x, t, y)));
  }

  SECTION("an Atelier file's dit.config wins over the width table") {
    DiTConfig c = tiny_config();
    c.num_heads = 2;
    DiT model(c);
    randomize(model, 5);
    safetensors::save(dir / "atelier.safetensors", module_tensors(*model), {{"dit.config", to_json(c).dump()}});
    DiTFileInfo info;
    load_dit(dir / "atelier.safetensors", {}, &info);
    CHECK(info.config.num_heads == 2);
    CHECK(to_json(info.config) == to_json(c));
  }
  SECTION("training checkpoints: ema. before model.") {
    DiT model(a), ema(a);
    randomize(model, 1);
    randomize(ema, 2);
    TensorMap ckpt = module_tensors(*model, "model.");
    for (auto& [k, v] : module_tensors(*ema, "ema.")) ckpt[k] = v;
    ckpt["rng"] = torch::zeros({4}, torch::kLong);
    safetensors::save(dir / "ckpt.safetensors", ckpt);
    DiTFileInfo info;
    DiT loaded = load_dit(dir / "ckpt.safetensors", {}, &info);
    CHECK(info.prefix == "ema.");
    CHECK(torch::equal(loaded->final_linear->weight, ema->final_linear->weight));
  }
}

TEST_CASE("DiT final_conv starts as the identity and then mixes neighbouring patches", "[dit]") {
  DiTConfig c = tiny_config();
  c.final_conv = true;
  DiT with(c);
  c.final_conv = false;
  DiT without(c);
  randomize(without, 21);
  TensorMap tensors = module_tensors(*without);
  CHECK_FALSE(tensors.count("final_conv.weight"));
  tensors["final_conv.weight"] = module_tensors(*with).at("final_conv.weight");
  tensors["final_conv.bias"] = module_tensors(*with).at("final_conv.bias");
  CHECK(torch::count_nonzero(tensors["final_conv.weight"]).item<std::int64_t>() == 0);
  load_module_tensors(*with, tensors, "", "test", /*strict=*/true);
  torch::NoGradGuard no_grad;
  with->eval();
  without->eval();
  auto x = torch::randn({2, c.in_channels, c.input_size, c.input_size});
  auto t = torch::tensor({3.0f, 700.0f});
  auto y = torch::tensor({std::int64_t{1}, std::int64_t{0}});
  CHECK(torch::equal(with->forward(x, t, y), without->forward(x, t, y)));
  // A centre tap on one channel: the output at a patch's border now depends on the next patch.
  with->final_conv->weight.index_put_({0, 0, 1, 2}, 1.0);
  auto plain = without->forward(x, t, y);
  auto mixed = with->forward(x, t, y);
  const auto p = c.patch_size;
  auto border = plain.select(1, 0).select(2, p - 1) + plain.select(1, 0).select(2, p);
  CHECK(max_abs_diff(mixed.select(1, 0).select(2, p - 1), border) < 1e-5);
}

TEST_CASE("DiT strict loading lists every problem in one error", "[dit]") {
  TempDir dir("atelier-dit");
  SECTION("official names") {
    DiT model(tiny_config());
    TensorMap tensors = module_tensors(*model);
    tensors["blocks.0.attn.proj.weight"] = torch::zeros({3, 3});
    tensors.erase("blocks.1.mlp.fc2.bias");
    tensors["blocks.0.attn.extra.weight"] = torch::zeros({2});
    safetensors::save(dir / "bad.safetensors", tensors);
    const std::string msg = load_error(dir / "bad.safetensors");
    CHECK_THAT(msg, Catch::Contains("bad.safetensors"));
    CHECK_THAT(msg, Catch::Contains("'blocks.0.attn.proj.weight' has shape [3, 3], expected [128, 128]"));
    CHECK_THAT(msg, Catch::Contains("missing 'blocks.1.mlp.fc2.bias'"));
    CHECK_THAT(msg, Catch::Contains("unexpected 'blocks.0.attn.extra.weight'"));
  }
  SECTION("diffusers names: problems also name the file's keys") {
    TensorMap tensors = safetensors::load(fixture("weights_diffusers.safetensors")).tensors;
    tensors.erase("transformer_blocks.1.attn1.to_v.weight");
    tensors["proj_out_2.bias"] = torch::zeros({5});
    tensors["foo.weight"] = torch::zeros({1});
    safetensors::save(dir / "bad_diffusers.safetensors", tensors);
    const std::string msg = load_error(dir / "bad_diffusers.safetensors", {2, 8});
    CHECK_THAT(msg, Catch::Contains("diffusers names"));
    CHECK_THAT(msg, Catch::Contains("missing 'blocks.1.attn.qkv.weight'"));
    CHECK_THAT(msg, Catch::Contains("unexpected 'transformer_blocks.1.attn1.to_q.weight'"));
    CHECK_THAT(msg, Catch::Contains("'final_layer.linear.bias' (file: 'proj_out_2.bias') has shape [5]"));
    CHECK_THAT(msg, Catch::Contains("unexpected 'foo.weight'"));
  }
  SECTION("not a DiT") {
    safetensors::save(dir / "other.safetensors", {{"conv_in.weight", torch::zeros({4, 4, 3, 3})}});
    CHECK_THAT(load_error(dir / "other.safetensors"), Catch::Contains("no 'x_embedder.proj.weight'"));
  }
}

TEST_CASE("DiT pos_embed regeneration for a new input size", "[dit]") {
  DiTConfig c = tiny_config();
  c.hidden_size = 64;
  c.num_heads = 1;
  DiT model(c);  // 8x8 input, patch 2: 4x4 grid
  const auto d = c.hidden_size;
  CHECK(max_abs_diff(model->pos_embed[0], expected_pos_embed(d, 4, 1.0)) <= 1e-6);
  // The layout of diffusers' (and the official) get_2d_sincos_pos_embed, from the fixture.
  const torch::Tensor ref = load_tensor_file(fixture("official.pt")).tensors.at("pos_embed");
  CHECK(max_abs_diff(sincos_pos_embed_2d(ref.size(2), 4).unsqueeze(0), ref) <= 1e-6);

  SECTION("2x grid") {
    model->set_input_size(16);
    CHECK(model->config().input_size == 16);
    REQUIRE(model->pos_embed.sizes() == torch::IntArrayRef({1, 64, d}));
    CHECK(max_abs_diff(model->pos_embed[0], expected_pos_embed(d, 8, 1.0)) <= 1e-6);
    torch::NoGradGuard no_grad;
    auto out = model->forward(torch::randn({1, 4, 16, 16}), torch::tensor({5.0f}), torch::tensor({2}, torch::kLong));
    CHECK(out.sizes() == torch::IntArrayRef({1, 8, 16, 16}));
  }
  SECTION("2x grid scaled to the base grid (PixArt-style)") {
    const torch::Tensor base = model->pos_embed[0].clone();
    model->set_input_size(16, /*base_grid=*/4);
    const torch::Tensor scaled = model->pos_embed[0];
    CHECK(max_abs_diff(scaled, expected_pos_embed(d, 8, 0.5)) <= 1e-6);  // coords = arange(8) / (8 / 4)
    // Even cells of the 8x8 grid sit at the 4x4 grid's integer positions.
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t w = 0; w < 4; ++w) CHECK(max_abs_diff(scaled[2 * h * 8 + 2 * w], base[h * 4 + w]) <= 1e-6);
  }
}
