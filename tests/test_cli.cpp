#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/safetensors.h"
#include "studio/workspace.h"
#include "tests/helpers.h"

using namespace atelier;

TEST_CASE("atelier convert and inspect agree with the reference torch/safetensors packages", "[cli]") {
  test::TempDir dir;
  for (const char* name : {"sequential", "nested", "views", "dtypes", "weird_name"}) {
    INFO(name);
    auto pt = test::source_path(std::string("tests/fixtures/torch/") + name + ".pt").string();
    auto out = (dir / (std::string(name) + ".safetensors")).string();
    auto r = test::run_cli("convert " + pt + " " + out);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto converted = safetensors::load(out);
    auto ref = safetensors::load(test::source_path(std::string("tests/fixtures/torch/") + name + ".ref.safetensors"));
    REQUIRE(converted.tensors.size() == ref.tensors.size());
    for (const auto& [key, t] : ref.tensors) {
      INFO(key);
      REQUIRE(converted.tensors.count(key));
      CHECK(converted.tensors.at(key).scalar_type() == t.scalar_type());
      CHECK(torch::equal(converted.tensors.at(key), t));
    }
    auto inspected = test::run_cli("inspect --json " + pt);
    REQUIRE(inspected.exit_code == 0);
    auto j = json::parse(inspected.output);
    CHECK(j["format"] == "torch zip checkpoint");
    for (const auto& [key, t] : ref.tensors) CHECK(j["tensors"][key]["shape"] == json(t.sizes().vec()));
  }
}

TEST_CASE("convert --select keeps one subtree and --dtype casts floats", "[cli]") {
  test::TempDir dir;
  auto pt = test::source_path("tests/fixtures/torch/nested.pt").string();
  auto out = (dir / "ema.safetensors").string();
  auto r = test::run_cli("convert " + pt + " " + out + " --select ema --dtype f16");
  REQUIRE(r.exit_code == 0);
  auto f = safetensors::load(out);
  for (const auto& [key, t] : f.tensors) {
    CHECK(key.rfind("ema.", 0) != 0);
    CHECK(t.scalar_type() == torch::kHalf);
  }
  CHECK(f.metadata.at("args").find("Namespace(") == 0);
  CHECK(test::run_cli("convert " + pt + " " + out + " --dtype f8").exit_code == 1);
}

TEST_CASE("jobs lists every kind with typed fields; usage errors exit 2", "[cli]") {
  auto r = test::run_cli("jobs --json");
  REQUIRE(r.exit_code == 0);
  auto kinds = json::parse(r.output);
  std::vector<std::string> names;
  for (const auto& k : kinds) names.push_back(k["kind"]);
  for (const char* expected : {"train_probe", "train_base", "sample"})
    CHECK(std::find(names.begin(), names.end(), expected) != names.end());
  for (const auto& k : kinds)
    for (const auto& f : k["fields"]) {
      CHECK(f.contains("type"));
      CHECK(f.contains("default"));
      CHECK_FALSE(f["help"].get<std::string>().empty());
    }
  CHECK(test::run_cli("--help").exit_code == 0);
  CHECK(test::run_cli("run --help").exit_code == 0);
  CHECK(test::run_cli("frobnicate").exit_code == 2);
  CHECK(test::run_cli("run").exit_code == 2);
  auto bad = test::run_cli("jobs nope");
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("unknown job kind 'nope'") != std::string::npos);
}

TEST_CASE("verify reproduces reference outputs of converted checkpoints", "[cli]") {
  auto dit = test::source_path("tests/fixtures/dit/").string();
  auto vae = test::source_path("tests/fixtures/vae/").string();
  auto ok = test::run_cli("verify " + dit + "weights_diffusers.safetensors " + dit + "io.safetensors");
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
  CHECK(ok.output.find("dit sample") != std::string::npos);
  // The official model embeds timesteps with frequency shift 0, diffusers with 1: verify must notice.
  auto shifted = test::run_cli("verify " + dit + "official.pt " + dit + "io.safetensors");
  CHECK(shifted.exit_code == 1);
  CHECK(shifted.output.find("MISMATCH") != std::string::npos);
  auto v = test::run_cli("verify " + vae + "weights_ldm.safetensors " + vae + "io.safetensors");
  CHECK(v.exit_code == 0);
  CHECK(v.output.find("vae decoded") != std::string::npos);
  auto strict =
      test::run_cli("verify " + dit + "weights_diffusers.safetensors " + dit + "io.safetensors --tolerance 1e-12");
  CHECK(strict.exit_code == 1);
  CHECK(strict.output.find("does not reproduce") != std::string::npos);
  auto wrong = test::run_cli("verify " + vae + "weights_diffusers.safetensors " + dit + "io.safetensors");
  CHECK(wrong.exit_code == 1);
  CHECK(wrong.output.find("atelier: error:") != std::string::npos);
}

TEST_CASE("verify prints the loader's warnings: a diffusers DiT whose per-block embedder copies differ", "[cli]") {
  test::TempDir dir("atelier-verify-warn");
  const auto dit = test::source_path("tests/fixtures/dit/");
  TensorFile f = safetensors::load(dit / "weights_diffusers.safetensors");
  const std::string key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.weight";
  REQUIRE(f.tensors.count(key) == 1);
  f.tensors[key] = f.tensors[key] + 1;
  safetensors::save(dir / "edited.safetensors", f.tensors, f.metadata);
  auto r = test::run_cli("verify " + (dir / "edited.safetensors").string() + " " + (dit / "io.safetensors").string());
  INFO(r.output);
  CHECK(r.exit_code == 0);  // block 0's copy is used, so the outputs still reproduce
  CHECK_THAT(r.output, Catch::Contains("atelier: warning:") && Catch::Contains("transformer_blocks 1 differ"));
}

TEST_CASE("atelier shapes writes a preset as a folder dataset (the Data panel's Write folder)", "[cli][app]") {
  test::TempDir dir("atelier-shapes-cli");
  const std::string out = (dir / "night").string();
  auto r = test::run_cli("shapes " + out + " --preset night --count 10 --size 16");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const ImageFolderInfo folder = scan_image_folder(out);
  CHECK(folder.items.size() == 10);
  CHECK(folder.items[0].caption.find("night") != std::string::npos);
  auto bad = test::run_cli("shapes " + out + " --preset neon");
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("unknown preset 'neon'") != std::string::npos);
  CHECK(test::run_cli("shapes --preset list " + out).output.find("concept glyphs") != std::string::npos);
}
