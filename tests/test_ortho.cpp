// Orthogonal adaptation: the documented basis (matched against PyPI torch), disjoint columns per concept,
// exact recovery of each concept's update from a merge, the concept jobs and the merge job.
#include <catch2/catch.hpp>

#include "adapters/adapter_file.h"
#include "adapters/finetune.h"
#include "adapters/ortho.h"
#include "core/atomic_file.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/shapes.h"
#include "diffusion/dit.h"
#include "helpers.h"

using namespace atelier;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

DiT small_dit() {
  torch::manual_seed(0);
  return DiT(test::tiny_dit_config());
}

}  // namespace

TEST_CASE("The orthogonal basis follows its documented recipe (PyPI torch reference)", "[ortho]") {
  const auto reference =
      safetensors::load(test::source_path("tests/fixtures/lora/io.safetensors")).tensors.at("ortho_basis_24_seed7");
  const auto basis = orthogonal_basis(24, 7);
  CHECK(test::max_abs_diff(basis, reference) <= 1e-10);
  CHECK(test::max_abs_diff(basis.t().matmul(basis), torch::eye(24, torch::kDouble)) <= 1e-12);
}

TEST_CASE("Orthogonal LoRAs of disjoint slots: B_i^T B_j = 0, and each update is recovered from the merge", "[ortho]") {
  DiT m = small_dit();
  TensorMap base;  // copies: module_tensors shares the parameters' storage
  for (const auto& [name, t] : module_tensors(*m)) base[name] = t.clone();
  const std::vector<std::string> targets{"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};
  std::vector<LoRA> concepts;
  const std::vector<double> lambda{0.6, 0.6, 0.9};
  for (std::int64_t slot = 0; slot < 3; ++slot) {
    concepts.push_back(create_ortho_lora(*m, targets, {7, slot * 4, 4}, 4.0));
    torch::NoGradGuard no_grad;
    for (const auto& l : concepts.back().layers()) {
      CHECK_FALSE(l->down.requires_grad());
      CHECK(l->up.requires_grad());
      l->up.normal_(0, 0.1);  // a trained up-projection
    }
  }
  for (std::size_t i = 0; i < concepts.size(); ++i)
    for (std::size_t j = 0; j < concepts.size(); ++j)
      for (std::size_t l = 0; l < concepts[i].layers().size(); ++l) {
        const auto gram = concepts[i].layers()[l]->down.matmul(concepts[j].layers()[l]->down.t());  // B_i^T B_j
        const auto expected = i == j ? torch::eye(4) : torch::zeros({4, 4});
        CHECK(test::max_abs_diff(gram, expected) <= 1e-6);
      }
  for (std::size_t i = 0; i < concepts.size(); ++i) concepts[i].merge(*m, lambda[i]);
  const TensorMap merged = module_tensors(*m);
  for (std::size_t i = 0; i < concepts.size(); ++i)
    for (std::size_t l = 0; l < concepts[i].paths().size(); ++l) {
      const auto& path = concepts[i].paths()[l];
      const auto& layer = concepts[i].layers()[l];
      const auto delta = merged.at(path + ".weight") - base.at(path + ".weight");
      const auto recovered = delta.matmul(layer->down.t()) / (lambda[i] * layer->scale);  // = up_i exactly
      CHECK(test::max_abs_diff(recovered, layer->up) <= 1e-5);
    }
  CHECK_THROWS_WITH(create_ortho_lora(*m, targets, {7, 30, 4}, 4.0), Contains("do not fit layer"));
  CHECK_THROWS_WITH(check_disjoint({{"a.safetensors", {7, 0, 4}}, {"b.safetensors", {7, 2, 4}}}),
                    Contains("a.safetensors") && Contains("b.safetensors") && Contains("share basis columns"));
  CHECK_NOTHROW(check_disjoint({{"a", {7, 0, 4}}, {"b", {8, 0, 4}}, {"c", {7, 4, 4}}}));
}

TEST_CASE("ortho_lora and lora concept jobs, then merge: one model with every concept's token", "[ortho][cli]") {
  test::TempDir dir;
  REQUIRE(test::run_job_file(dir, test::tiny_base_job(), "base").exit_code == 0);
  const auto base_file = (dir / "base/model.safetensors").string();
  auto train_concept = [&](const std::string& kind, const std::string& glyph, int slot) {
    json j = {{"kind", kind},
              {"base", base_file},
              {"glyph", glyph},
              {"rank", 4},
              {"alpha", 4},
              {"ortho_slot", slot},
              {"steps", 3},
              {"batch", 4},
              {"sample_steps", 2},
              {"eval_samples", 4},
              {"probe", test::source_path("assets/models/probe.safetensors").string()}};
    auto r = test::run_job_file(dir, j, glyph);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return (dir / glyph / "adapter.safetensors").string();
  };
  const auto spiral = train_concept("ortho_lora", "spiral", 0);
  const auto bolt = train_concept("ortho_lora", "bolt", 1);
  const auto key = train_concept("lora", "key", 0);
  const AdapterFile a = load_adapter(spiral);
  CHECK(a.info.method == AdapterMethod::OrthoLoRA);
  CHECK(a.info.settings["ortho"]["first"] == 0);
  CHECK(a.tensors.count("concept.embedding") == 1);
  CHECK(load_json_file(dir / "spiral/metrics.json").contains("feature_cosine"));

  json merge = {{"kind", "merge"},
                {"base", base_file},
                {"adapters", {spiral, bolt, key}},
                {"per_concept", 2},
                {"sample_steps", 2},
                {"eval_samples", 4},
                {"probe", test::source_path("assets/models/probe.safetensors").string()}};
  auto r = test::run_job_file(dir, merge, "merged");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  DiTModelInfo info;
  DiT merged = load_dit_model(dir / "merged/model.safetensors", &info);
  CHECK(info.class_names == std::vector<std::string>{"circle", "square", "spiral", "bolt", "key"});
  CHECK(merged->y_table->weight.size(0) == 6);
  const json m = load_json_file(dir / "merged/metrics.json");
  CHECK(m["concepts"].size() == 3);
  CHECK(fs::exists(dir / "merged/preview.png"));

  json clash = merge;
  clash["adapters"] = {spiral, train_concept("ortho_lora", "moon", 0)};
  auto bad = test::run_job_file(dir, clash, "clash");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("share basis columns"));
  CHECK_FALSE(fs::exists(dir / "clash/model.safetensors"));
}

TEST_CASE("A concept trains from a folder of images; an empty folder is a named error", "[ortho][cli]") {
  test::TempDir dir;
  REQUIRE(test::run_job_file(dir, test::tiny_base_job(), "base").exit_code == 0);
  fs::create_directories(dir / "my-cat");
  for (int i = 0; i < 3; ++i) {
    shapes::Attributes a;
    a.shape = -1;
    a.glyph = 4;
    a.angle = 20.0f * static_cast<float>(i);
    save_png(dir / "my-cat" / ("img" + std::to_string(i) + ".png"), shapes::render(a, 24));
  }
  json job = {{"kind", "lora"},
              {"base", (dir / "base/model.safetensors").string()},
              {"images", (dir / "my-cat").string()},
              {"rank", 2},
              {"alpha", 2},
              {"steps", 2},
              {"batch", 2},
              {"sample_steps", 2},
              {"eval_samples", 2},
              {"probe", test::source_path("assets/models/probe.safetensors").string()}};
  auto r = test::run_job_file(dir, job, "cat");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const AdapterFile a = load_adapter(dir / "cat/adapter.safetensors");
  CHECK(a.info.classes == std::vector<std::string>{"my-cat"});
  CHECK(load_json_file(dir / "cat/metrics.json").contains("feature_cosine"));

  fs::create_directories(dir / "empty");
  job["images"] = (dir / "empty").string();
  auto empty = test::run_job_file(dir, job, "empty-run");
  CHECK(empty.exit_code == 1);
  CHECK_THAT(empty.output, Contains("empty"));
  job["images"] = (dir / "my-cat").string();
  job["concept"] = "circle";  // already a class of the base
  auto taken = test::run_job_file(dir, job, "taken");
  CHECK(taken.exit_code == 1);
  CHECK_THAT(taken.output, Contains("field 'concept'") && Contains("'circle'"));
}

TEST_CASE("Per-block weights scale each block's LoRA updates", "[ortho][lora]") {
  DiT m = small_dit();  // 2 blocks
  LoRA lora = LoRA::create(*m, {"attn.qkv"}, {2, 2.0, 0.0});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : lora.parameters()) p.normal_(0, 0.1);
  }
  const auto w0 = m->blocks[0]->as<DiTBlockImpl>()->qkv->weight.detach().clone();
  const auto w1 = m->blocks[1]->as<DiTBlockImpl>()->qkv->weight.detach().clone();
  const auto delta0 = lora.layers()[0]->weight_delta().detach();
  lora.scale_blocks({0.5, 0.0});
  lora.merge(*m, 1.0);
  CHECK(test::max_abs_diff(m->blocks[0]->as<DiTBlockImpl>()->qkv->weight, w0 + 0.5 * delta0) <= 1e-6);
  CHECK(torch::equal(m->blocks[1]->as<DiTBlockImpl>()->qkv->weight, w1));
  CHECK_THROWS_WITH(lora.scale_blocks({1.0}), Contains("field 'block_weights'") && Contains("block 1"));
}
