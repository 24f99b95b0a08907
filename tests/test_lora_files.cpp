// LoRA file dialects (Atelier, PEFT, kohya): the PyPI peft fixture (scripts/make_lora_fixtures.py) loaded
// and matched, conversions between dialects giving identical merged weights, and the compatibility report.
#include <catch2/catch.hpp>

#include "adapters/finetune.h"
#include "adapters/lora_files.h"
#include "adapters/tuning.h"
#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "diffusion/dit.h"
#include "diffusion/model_file.h"
#include "helpers.h"

using namespace atelier;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path fixture(const std::string& name) {
  return test::source_path("tests/fixtures/lora/" + name);
}

// The fixture script's model, layer for layer, calling its layers through LayerHooks.
class TinyImpl : public torch::nn::Module {
 public:
  TinyImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    auto attn = register_module("attn", std::make_shared<torch::nn::Module>());
    qkv = attn->register_module("qkv", torch::nn::Linear(8, 24));
    proj = attn->register_module("proj", torch::nn::Linear(8, 8));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    fc1 = mlp->register_module("fc1", torch::nn::Linear(8, 32));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    auto t = hooks.conv2d(*conv, x).flatten(2).transpose(1, 2);
    auto q = hooks.linear(*qkv, t).narrow(-1, 0, 8) + hooks.linear(*proj, t);
    return hooks.linear(*fc1, torch::gelu(q));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr};
  LayerHooks hooks;
};
TORCH_MODULE(Tiny);

Tiny load_tiny() {
  Tiny m;
  load_module_tensors(*m, safetensors::load(fixture("base.safetensors")).tensors, "", "base.safetensors");
  return m;
}

TensorMap merged_weights(const LoRAWeights& w) {
  Tiny m = load_tiny();
  to_lora(w, *m, "test").merge(*m);
  return module_tensors(*m);
}

}  // namespace

TEST_CASE("A PEFT LoRA saved by the PyPI peft package loads and matches peft's outputs", "[lora][parity]") {
  const TensorMap io = safetensors::load(fixture("io.safetensors")).tensors;
  Tiny m = load_tiny();
  const auto x = io.at("x");
  CHECK(test::max_abs_diff(m->forward(x), io.at("out_base")) <= 1e-6);

  const LoRAWeights w = read_lora_file(fixture("peft/adapter_model.safetensors"), lora_layer_paths(*m));
  CHECK(w.dialect == LoRADialect::PEFT);
  REQUIRE(w.layers.size() == 4);
  CHECK(w.layers.at("attn.qkv").alpha == 8.0);  // lora_alpha 8, r 4: scale 2
  LoRA lora = to_lora(w, *m, "peft fixture");
  lora.attach(m->hooks, *m);
  CHECK(test::max_abs_diff(m->forward(x), io.at("out_lora")) <= 1e-5);  // attached (unmerged) path
  lora.detach(m->hooks);
  lora.merge(*m);
  CHECK(test::max_abs_diff(m->forward(x), io.at("out_merged")) <= 1e-5);
  for (const auto& [name, t] : module_tensors(*m)) CHECK(test::max_abs_diff(t, io.at("merged." + name)) <= 1e-6);
}

TEST_CASE("kohya <-> PEFT <-> Atelier conversions give identical merged weights", "[lora][dialects]") {
  test::TempDir dir;
  Tiny m = load_tiny();
  const auto paths = lora_layer_paths(*m);
  const LoRAWeights peft = read_lora_file(fixture("peft/adapter_model.safetensors"), paths);
  const TensorMap reference = merged_weights(peft);

  write_lora_file(dir / "kohya.safetensors", peft, LoRADialect::Kohya);
  const LoRAWeights kohya = read_lora_file(dir / "kohya.safetensors", paths);
  CHECK(kohya.dialect == LoRADialect::Kohya);
  CHECK(safetensors::load(dir / "kohya.safetensors").tensors.count("lora_unet_attn_qkv.lora_down.weight") == 1);

  AdapterInfo info;
  info.base_hash = model_hash(*m);
  write_lora_file(dir / "atelier.safetensors", kohya, LoRADialect::Atelier, info);
  const LoRAWeights atelier = read_lora_file(dir / "atelier.safetensors", paths);
  CHECK(atelier.dialect == LoRADialect::Atelier);
  CHECK(atelier.atelier.base_hash == info.base_hash);

  fs::create_directories(dir / "peft");
  write_lora_file(dir / "peft/adapter_model.safetensors", atelier, LoRADialect::PEFT);
  const LoRAWeights back = read_lora_file(dir / "peft/adapter_model.safetensors", paths);
  CHECK(load_json_file(dir / "peft/adapter_config.json")["lora_alpha"] == 8.0);

  for (const LoRAWeights* w : {&kohya, &atelier, &back}) {
    const TensorMap merged = merged_weights(*w);
    for (const auto& [name, t] : reference) CHECK(torch::equal(merged.at(name), t));
  }
}

TEST_CASE("PEFT scales: rsLoRA, alpha_pattern and a missing config", "[lora][dialects]") {
  test::TempDir dir;
  Tiny m = load_tiny();
  const auto paths = lora_layer_paths(*m);
  fs::create_directories(dir / "a");
  fs::copy_file(fixture("peft/adapter_model.safetensors"), dir / "a/adapter_model.safetensors");
  // No adapter_config.json: scale 1 (alpha = rank).
  CHECK(read_lora_file(dir / "a/adapter_model.safetensors", paths).layers.at("attn.qkv").alpha == 4.0);
  write_file_atomic(dir / "a/adapter_config.json",
                    json{{"r", 4}, {"lora_alpha", 8}, {"use_rslora", true}, {"alpha_pattern", {{"fc1", 2}}}}.dump());
  const auto w = read_lora_file(dir / "a/adapter_model.safetensors", paths);
  CHECK(w.layers.at("attn.qkv").alpha == Approx(8.0 / 2.0 * 4.0));  // scale alpha / sqrt(r) = 4
  CHECK(w.layers.at("mlp.fc1").alpha == Approx(2.0 / 2.0 * 4.0));
}

TEST_CASE("LoRA compatibility report lists matched, unmatched and mismatched layers", "[lora][dialects][cli]") {
  test::TempDir dir;
  torch::manual_seed(0);
  const DiTConfig c = test::tiny_dit_config(32, 1);
  DiT dit(c);
  Metadata meta = {
      {"dit.config", to_json(c).dump()}, {"classes", R"(["a","b"])"},     {"data", "null"},
      {"diffusion.schedule", "linear"},  {"diffusion.prediction", "eps"}, {"diffusion.num_train_timesteps", "1000"}};
  safetensors::save(dir / "base.safetensors", module_tensors(*dit), meta);
  LoRAWeights w = from_lora(LoRA::create(*dit, {"attn.qkv", "attn.proj", "mlp.fc1"}, {4, 4.0, 0.0}));
  w.layers["blocks.0.attn.proj"].down = torch::zeros({4, 16});    // wrong input width
  w.layers["blocks.7.attn.qkv"] = w.layers["blocks.0.attn.qkv"];  // a block the model lacks
  write_lora_file(dir / "kohya.safetensors", w, LoRADialect::Kohya);
  auto r = test::run_cli("inspect " + (dir / "kohya.safetensors").string() + " --base " +
                         (dir / "base.safetensors").string());
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("kohya LoRA") && Contains("matched:    2") && Contains("unmatched:  1") &&
                           Contains("lora_unet_blocks_7_attn_qkv") && Contains("mismatched: 1") &&
                           Contains("blocks.0.attn.proj"));
  auto bad =
      test::run_cli("convert-lora " + (dir / "kohya.safetensors").string() + " " + (dir / "out.safetensors").string() +
                    " --to peft --base " + (dir / "base.safetensors").string());
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("2 LoRA layer(s) do not fit the model"));
  CHECK_FALSE(fs::exists(dir / "out.safetensors"));

  w.layers.erase("blocks.7.attn.qkv");
  w.layers.erase("blocks.0.attn.proj");
  write_lora_file(dir / "ok.safetensors", w, LoRADialect::Kohya);
  auto ok = test::run_cli("convert-lora " + (dir / "ok.safetensors").string() + " " +
                          (dir / "ok-atelier.safetensors").string() + " --to atelier --base " +
                          (dir / "base.safetensors").string());
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
  CHECK(load_adapter(dir / "ok-atelier.safetensors").info.base_hash == model_hash(*dit));
}

TEST_CASE("A PEFT and a kohya LoRA on a diffusers DiT (diffusers layer names) sample, fold and convert like diffusers",
          "[lora][parity][dit]") {
  // scripts/make_dit_lora_fixtures.py: the base as a diffusers model folder, a PEFT LoRA saved by peft
  // (separate to_q/to_k/to_v with different ranks and alphas, the patch conv, MLP, output), a kohya LoRA
  // from diffusers' converter (to_q and to_v only), and diffusers' outputs.
  const fs::path base = fixture("dit/transformer/diffusion_pytorch_model.safetensors");
  const fs::path peft = fixture("dit/peft/adapter_model.safetensors"), kohya = fixture("dit/kohya.safetensors");
  const TensorMap io = safetensors::load(fixture("dit/io.safetensors")).tensors;
  const auto latents = io.at("latents"), t = io.at("timesteps"), labels = io.at("labels");
  auto run = [&](DiT& model) {
    torch::NoGradGuard no_grad;
    model->eval();
    return model->forward(latents, t, labels);
  };
  // diffusers' norm3 eps (1e-5 vs 1e-6) is the only architectural difference.
  const auto rel = test::relative_diff;
  DiTModelInfo info;
  DiT plain = load_generator_model(base, &info);
  CHECK(rel(run(plain), io.at("sample_base")) <= 1e-5);

  const LoRAWeights w = read_lora_file(peft, lora_layer_paths(*plain));
  CHECK(w.dialect == LoRADialect::PEFT);
  CHECK(w.diffusers_names);
  CHECK(w.unresolved.empty());
  CHECK(w.layers.size() == 10);  // per block qkv, proj, fc1, fc2; x_embedder.proj; final_layer.linear
  CHECK(w.layers.at("blocks.1.attn.qkv").down.size(0) == 4 + 2 + 4);  // to_q r 4, to_k r 2, to_v r 4
  CHECK(w.layers.count("x_embedder.proj") == 1);
  CHECK(w.layers.count("final_layer.linear") == 1);

  // Attached (unmerged) and folded, through the same path `sample` and `fold` take.
  std::vector<std::pair<LoRA, double>> loras;
  DiT adapted = load_adapted_model(base.string(), {peft.string()}, {}, &info, &loras);
  CHECK(rel(run(adapted), io.at("sample_peft")) <= 1e-5);
  DiT folded = fold_adapters(adapted, loras);
  CHECK(rel(run(folded), io.at("sample_peft_merged")) <= 1e-5);

  // The kohya file: no lora_unet_ prefix, to_k missing (a zero block of qkv).
  const LoRAWeights k = read_lora_file(kohya, lora_layer_paths(*plain));
  CHECK(k.dialect == LoRADialect::Kohya);
  CHECK(k.unresolved.empty());
  CHECK(k.layers.size() == 2);
  loras.clear();
  DiT kohya_adapted = load_adapted_model(base.string(), {kohya.string()}, {}, &info, &loras);
  DiT kohya_folded = fold_adapters(kohya_adapted, loras);
  CHECK(rel(run(kohya_folded), io.at("sample_kohya_merged")) <= 1e-5);

  // The CLI: the report, fold, and conversions (diffusers names kept, or model names) that fold alike.
  test::TempDir dir;
  auto report = test::run_cli("inspect " + peft.string() + " --base " + base.string());
  INFO(report.output);
  CHECK(report.exit_code == 0);
  CHECK_THAT(report.output, Contains("with diffusers DiT layer names") && Contains("matched:    10") &&
                                Contains("unmatched:  0") && Contains("mismatched: 0"));
  auto fold =
      test::run_cli("fold " + base.string() + " " + peft.string() + " -o " + (dir / "folded.safetensors").string());
  INFO(fold.output);
  REQUIRE(fold.exit_code == 0);
  DiT from_cli = load_dit_model(dir / "folded.safetensors");
  CHECK(rel(run(from_cli), io.at("sample_peft_merged")) <= 1e-5);
  for (const auto& [to, names] : std::vector<std::pair<std::string, std::string>>{
           {"kohya", "diffusers"}, {"peft", ""}, {"kohya", "model"}, {"atelier", ""}}) {
    INFO(to << " " << names);
    const fs::path out = dir / (to + names) / "lora.safetensors";
    fs::create_directories(out.parent_path());
    auto conv = test::run_cli("convert-lora " + peft.string() + " " + out.string() + " --to " + to + " --base " +
                              base.string() + (names.empty() ? "" : " --names " + names));
    INFO(conv.output);
    REQUIRE(conv.exit_code == 0);
    const LoRAWeights back = read_lora_file(out, lora_layer_paths(*plain));
    CHECK(back.diffusers_names == (names != "model" && to != "atelier"));
    if (names == "diffusers") {  // qkv split into to_q / to_k / to_v again
      const TensorMap written = safetensors::load(out).tensors;
      CHECK(written.count("lora_unet_transformer_blocks_0_attn1_to_k.lora_down.weight") == 1);
    }
    loras.clear();
    DiT again = load_adapted_model(base.string(), {out.string()}, {}, &info, &loras);
    DiT again_folded = fold_adapters(again, loras);
    CHECK(rel(run(again_folded), io.at("sample_peft_merged")) <= 1e-5);
  }
  auto bad = test::run_cli("convert-lora " + peft.string() + " " + (dir / "x.safetensors").string() +
                           " --to atelier --names diffusers --base " + base.string());
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("--names diffusers needs --to peft or kohya"));
  CHECK_FALSE(fs::exists(dir / "x.safetensors"));
}
