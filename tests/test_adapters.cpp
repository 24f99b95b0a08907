// adapters/: LoRA layers and sets, DiffFit/BitFit/full/LoRA tuning of a DiT, adapter files, folding,
// the `difffit` job and `atelier fold`.
#include <catch2/catch.hpp>
#include <regex>

#include "adapters/adapter_file.h"
#include "adapters/finetune.h"
#include "adapters/lora.h"
#include "adapters/tuning.h"
#include "core/atomic_file.h"
#include "core/training_state.h"
#include "data/presets.h"
#include "helpers.h"

using namespace atelier;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// A tiny random DiT whose adaLN layers are not zero, so every branch (and gamma) matters.
DiT random_dit(std::uint64_t seed, std::int64_t classes = 3) {
  torch::manual_seed(seed);
  DiT m(test::tiny_dit_config(32, 4, 8, 3, classes));
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters())
    if (p.dim() >= 1 && p.numel() > 1) p.add_(torch::randn_like(p) * 0.05);
  m->eval();
  return m;
}

struct Inputs {
  torch::Tensor x, t, y;
};
Inputs inputs(const DiT& m, std::int64_t n = 3) {
  torch::manual_seed(11);
  const auto& c = m->config();
  return {torch::randn({n, c.in_channels, c.input_size, c.input_size}), torch::tensor({10, 500, 999}).narrow(0, 0, n),
          torch::tensor({0, 1, 2}).narrow(0, 0, n)};
}
torch::Tensor run(DiT& m, const Inputs& in) {
  torch::NoGradGuard no_grad;
  return m->forward(in.x, in.t, in.y);
}

}  // namespace

TEST_CASE("LoRA target patterns: path tails as PEFT, globs over segments", "[adapters][lora]") {
  CHECK(matches_target("blocks.3.attn.qkv", "attn.qkv"));
  CHECK(matches_target("blocks.3.attn.qkv", "blocks.3.attn.qkv"));
  CHECK_FALSE(matches_target("blocks.3.attn.qkv", "tn.qkv"));
  CHECK(matches_target("blocks.3.attn.qkv", "blocks.*.attn.qkv"));
  CHECK_FALSE(matches_target("blocks.3.attn.qkv", "blocks.*.qkv"));
  CHECK(matches_target("blocks.3.attn.qkv", "blocks.**.qkv"));
}

TEST_CASE("LoRA: a fresh LoRA changes nothing; attached equals merged; unmerge restores", "[adapters][lora]") {
  DiT m = random_dit(1);
  const auto in = inputs(m);
  const auto base = run(m, in);
  TensorMap before;  // copies: module_tensors shares the parameters' storage
  for (const auto& [name, t] : module_tensors(*m)) before[name] = t.clone();
  LoRA lora = LoRA::create(*m, {"attn.qkv", "mlp.fc1", "x_embedder.proj"}, {4, 8.0, 0.0});
  CHECK(lora.paths().size() == 2 * 4 + 1);  // qkv and fc1 in 4 blocks + the patch-embedding conv
  lora.attach(m->hooks(), *m);
  CHECK(torch::equal(run(m, in), base));  // up = 0

  {
    torch::NoGradGuard no_grad;
    for (auto& p : lora.parameters()) p.normal_(0, 0.1);
  }
  const auto attached = run(m, in);
  CHECK(test::max_abs_diff(attached, base) > 1e-3);
  lora.detach(m->hooks());
  CHECK(m->hooks().empty());
  lora.merge(*m, 1.0);
  CHECK(test::max_abs_diff(run(m, in), attached) <= 1e-5);
  CHECK(test::max_abs_diff(m->blocks[0]->as<DiTBlockImpl>()->qkv->weight, before.at("blocks.0.attn.qkv.weight")) >
        1e-3);
  lora.unmerge(*m, 1.0);
  for (const auto& [name, t] : module_tensors(*m)) CHECK(test::max_abs_diff(t, before.at(name)) <= 1e-6);

  // Rebuilt from its tensors, the LoRA reproduces the same output at weight 0.5 on either path.
  LoRA again = LoRA::from_tensors(*m, lora.tensors(), lora.options(), "test");
  again.attach(m->hooks(), *m, 0.5);
  const auto half = run(m, in);
  again.detach(m->hooks());
  again.merge(*m, 0.5);
  CHECK(test::max_abs_diff(run(m, in), half) <= 1e-5);
  CHECK_THROWS_WITH(LoRA::create(*m, {"attn.nothing"}, {}), Contains("match no Linear or Conv2d"));
}

TEST_CASE("Step 0 of every tuning method reproduces the base model bit for bit", "[adapters][difffit]") {
  for (const char* method : {"difffit", "bitfit", "full", "lora"}) {
    DYNAMIC_SECTION(method) {
      DiT m = random_dit(2);
      const auto in = inputs(m);
      const auto base = run(m, in);
      Rng rng(0);
      retarget_labels(m, {"a", "b", "c"}, {"a", "b", "c"}, rng);
      TuneSettings s;
      s.method = *enum_from_name<TuneMethod>(method);
      s.gamma_blocks = "all";
      Tuning tuning = prepare_tuning(m, s);
      CHECK(tuning.numel() > 0);
      CHECK(torch::equal(run(m, in), base));
    }
  }
}

TEST_CASE("DiffFit trains biases, label table and gammas with the scaled learning rate", "[adapters][difffit]") {
  DiT m = random_dit(3);
  TuneSettings s;  // difffit, gammas on the first half of the blocks, both branches
  Tuning t = prepare_tuning(m, s);
  std::int64_t gammas = 0;
  for (std::size_t i = 0; i < t.tensors.size(); ++i) {
    const auto& name = t.tensors[i].first;
    CHECK(t.scaled_lr[i]);
    const bool ok = name.find(".bias") != std::string::npos || name == "y_embedder.embedding_table.weight" ||
                    name.find(".gamma_") != std::string::npos;
    CHECK(ok);
    if (name.find(".gamma_") != std::string::npos) ++gammas;
  }
  CHECK(gammas == 4);  // blocks 0 and 1 of 4, attn and mlp
  for (const auto& p : m->named_parameters())
    CHECK(p.value().requires_grad() ==
          std::any_of(t.tensors.begin(), t.tensors.end(), [&](const auto& e) { return e.first == p.key(); }));
  CHECK(gamma_block_indices("0-2", 4) == std::vector<std::int64_t>{0, 1, 2});
  CHECK(gamma_block_indices("none", 4).empty());
  CHECK_THROWS_WITH(gamma_block_indices("2-9", 4), Contains("field 'gamma_blocks'") && Contains("0-3"));
  CHECK_THROWS_WITH(gamma_block_indices("half", 4), Contains("'half'"));
}

TEST_CASE("Re-targeted label tables keep known classes and the null row", "[adapters][difffit]") {
  DiT m = random_dit(4);
  const auto old = m->y_table->weight.detach().clone();
  Rng rng(0);
  retarget_labels(m, {"a", "b", "c"}, {"c", "new", "a", "z"}, rng);
  const auto& w = m->y_table->weight;
  REQUIRE(w.size(0) == 5);
  CHECK(m->config().num_classes == 4);
  CHECK(torch::equal(w[0], old[2]));
  CHECK(torch::equal(w[2], old[0]));
  CHECK(torch::equal(w[4], old[3]));  // null row
  CHECK(w[1].std().item<double>() < 0.05);
  // New rows may start as the mean of the base's class rows or as its null row instead; known rows,
  // the null row and the random stream are unaffected.
  for (LabelInit init : {LabelInit::Mean, LabelInit::Null}) {
    DiT n = random_dit(4);
    Rng r(0);
    retarget_labels(n, {"a", "b", "c"}, {"c", "new", "a", "z"}, r, init);
    const auto& v = n->y_table->weight;
    const auto expected = init == LabelInit::Mean ? old.slice(0, 0, 3).mean(0) : old[3];
    CHECK(torch::allclose(v[1], expected));
    CHECK(torch::allclose(v[3], expected));
    CHECK(torch::equal(v[0], old[2]));
    CHECK(torch::equal(v[4], old[3]));
    DiT plain = random_dit(4);
    Rng p(0);
    retarget_labels(plain, {"a", "b", "c"}, {"c", "new", "a", "z"}, p);
    CHECK(torch::equal(r.randn({4}), p.randn({4})));  // the stream after it does not depend on `init`
  }
}

TEST_CASE("Folding gammas and LoRA gives the adapted model's outputs", "[adapters][fold]") {
  for (const char* method : {"difffit", "lora"}) {
    DYNAMIC_SECTION(method) {
      DiT m = random_dit(5);
      const auto in = inputs(m);
      TuneSettings s;
      s.method = *enum_from_name<TuneMethod>(method);
      Tuning t = prepare_tuning(m, s);
      {
        torch::NoGradGuard no_grad;
        for (auto& [name, p] : t.tensors) p.add_(torch::randn_like(p) * 0.1);
        if (t.lora)
          for (auto& p : t.lora->parameters()) p.normal_(0, 0.1);
      }
      const auto adapted = run(m, in);
      std::vector<std::pair<LoRA, double>> loras;
      if (t.lora) loras.emplace_back(*t.lora, 1.0);
      DiT plain(m->config());
      load_module_tensors(*plain, folded_tensors(m, loras), "", "folded");
      plain->eval();
      CHECK(test::max_abs_diff(run(plain, in), adapted) <= 1e-5);
    }
  }
}

TEST_CASE("Trainable parameters of DiT-XL/2 printed by atelier match the formula", "[adapters][difffit][cli]") {
  // DiT-XL/2: D = 1152, 28 blocks, patch 2, learned sigma (8 output channels), 8 target classes.
  const std::int64_t D = 1152, depth = 28, K = 8, r = 8;
  // Biases: per block qkv 3D + proj D + fc1 4D + fc2 D + adaLN 6D = 15D; x_embedder D; t_embedder 2D;
  // final adaLN 2D; final linear p*p*2C = 32.
  const std::int64_t biases = depth * 15 * D + 5 * D + 2 * 2 * 8;
  const std::int64_t table = (K + 1) * D;           // re-created for the target classes + null row
  const std::int64_t gammas = (depth / 2) * 2 * D;  // first half of the blocks, attn and mlp, per channel
  // LoRA-r8 on qkv (D -> 3D), proj (D -> D), fc1 (D -> 4D), fc2 (4D -> D): r * (in + out) each.
  const std::int64_t lora = depth * r * ((D + 3 * D) + (D + D) + (D + 4 * D) + (4 * D + D));
  const std::map<std::string, std::int64_t> expected = {
      {"difffit", biases + table + gammas}, {"bitfit", biases + table}, {"lora", lora + table}};
  test::TempDir dir;
  for (const auto& [method, count] : expected) {
    json job = {{"kind", "difffit"}, {"base", "DiT-XL/2"}, {"method", method}, {"dry_run", true}, {"probe", ""}};
    write_file_atomic(dir / "job.json", job.dump());
    auto r = test::run_cli("run " + (dir / "job.json").string() + " --run-dir " + (dir / method).string());
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::smatch m;
    REQUIRE(std::regex_search(r.output, m, std::regex(method + " on DiT-XL/2: ([0-9]+) trainable parameters")));
    CHECK(std::stoll(m[1].str()) == count);
  }
  CHECK(expected.at("difffit") == 532256);
  CHECK(expected.at("bitfit") == 500000);
}

TEST_CASE("difffit job: adapter file, before/after metrics, fold, and loading onto the right base only",
          "[adapters][difffit][cli]") {
  test::TempDir dir;
  const auto base = test::tiny_base_model(dir, 0);
  json job = test::tiny_finetune_job(base, "difffit");
  job["fold"] = true;
  auto r = test::run_job_file(dir, job, "ft");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* f : {"adapter.safetensors", "before.png", "after.png", "metrics.json", "model.safetensors"})
    CHECK(fs::exists(dir / "ft" / f));
  const json m = load_json_file(dir / "ft/metrics.json");
  CHECK(m["trainable_parameters"].get<std::int64_t>() < m["model_parameters"].get<std::int64_t>() / 10);
  CHECK(m["adapter_bytes"].get<std::int64_t>() < static_cast<std::int64_t>(fs::file_size(base)) / 4);
  CHECK(m["before"].contains("fd_shapes"));
  CHECK(m["after"]["probe_accuracy"].get<double>() >= 0.0);

  const AdapterFile a = load_adapter(dir / "ft/adapter.safetensors");
  CHECK(a.info.method == AdapterMethod::DiffFit);
  CHECK(a.info.classes == std::vector<std::string>{"circle", "square"});
  for (const auto& [name, t] : a.tensors) {
    const bool ok = name.find(".bias") != std::string::npos || name.find(".gamma_") != std::string::npos ||
                    name == "y_embedder.embedding_table.weight";
    CHECK(ok);
  }

  // Applied at load time == the folded model == `atelier fold`.
  DiTModelInfo info;
  DiT adapted = load_adapted_model(base.string(), {(dir / "ft/adapter.safetensors").string()}, {}, &info);
  DiT folded = load_dit_model(dir / "ft/model.safetensors");
  const auto in = inputs(adapted, 2);
  CHECK(test::max_abs_diff(run(adapted, in), run(folded, in)) <= 1e-5);
  auto cli = test::run_cli("fold " + base.string() + " " + (dir / "ft/adapter.safetensors").string() + " -o " +
                           (dir / "folded.safetensors").string());
  INFO(cli.output);
  REQUIRE(cli.exit_code == 0);
  DiT folded_cli = load_dit_model(dir / "folded.safetensors");
  CHECK(test::max_abs_diff(run(folded_cli, in), run(folded, in)) <= 1e-6);

  // Another base model: one clear error, nothing written.
  const auto other = test::tiny_base_model(dir, 1);
  auto wrong = test::run_cli("fold " + other.string() + " " + (dir / "ft/adapter.safetensors").string() + " -o " +
                             (dir / "wrong.safetensors").string());
  CHECK(wrong.exit_code == 1);
  CHECK_THAT(wrong.output, Contains("adapter for base model") && Contains(other.string()));
  CHECK_FALSE(fs::exists(dir / "wrong.safetensors"));
  json sample = {
      {"kind", "sample"}, {"model", other.string()}, {"adapters", {(dir / "ft/adapter.safetensors").string()}},
      {"probe", ""},      {"per_class", 1},          {"steps", 2}};
  auto bad_sample = test::run_job_file(dir, sample, "bad-sample");
  CHECK(bad_sample.exit_code == 1);
  CHECK_THAT(bad_sample.output, Contains("was trained on another base model"));
  auto not_adapter =
      test::run_cli("fold " + base.string() + " " + base.string() + " -o " + (dir / "x.safetensors").string());
  CHECK(not_adapter.exit_code == 1);
  CHECK_THAT(not_adapter.output, Contains("no LoRA tensors") && Contains(base.string()));
}

TEST_CASE("difffit job: LoRA baseline and 16 -> 32 resolution adaptation", "[adapters][difffit][cli]") {
  test::TempDir dir;
  const auto base = test::tiny_base_model(dir, 0);
  json lora = test::tiny_finetune_job(base, "lora");
  lora["lora_rank"] = 2;
  auto r = test::run_job_file(dir, lora, "lora");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const AdapterFile a = load_adapter(dir / "lora/adapter.safetensors");
  CHECK(a.tensors.count("blocks.0.attn.qkv.lora_A.weight") == 1);
  CHECK(a.tensors.at("blocks.0.attn.qkv.lora_A.weight").size(0) == 2);

  json big = test::tiny_finetune_job(base, "difffit");
  big["image_size"] = 32;
  auto rb = test::run_job_file(dir, big, "big");
  INFO(rb.output);
  REQUIRE(rb.exit_code == 0);
  CHECK(load_json_file(dir / "big/metrics.json")["image_size"] == 32);
  DiTModelInfo info;
  DiT adapted = load_adapted_model(base.string(), {(dir / "big/adapter.safetensors").string()}, {}, &info);
  CHECK(adapted->config().input_size == 32);
  CHECK(adapted->pos_embed.size(1) == 64);  // (32 / 4)^2 tokens

  big["image_size"] = 30;  // not a multiple of the patch size 4: the field is named
  auto bad = test::run_job_file(dir, big, "bad");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("field 'image_size': 30 is not a multiple of the base model's patch size 4"));
}

TEST_CASE("difffit job on an image folder: its classes, FD to its images, sample with the adapter",
          "[adapters][difffit][cli]") {
  test::TempDir dir;
  const auto base = test::tiny_base_model(dir, 0);  // classes circle, square
  // Two classes: one the base and the probe know (circle), one neither knows (blob).
  write_shapes_folder({{"classes", {"circle", "triangle"}}, {"styles", {"night"}}}, 16, 12, dir / "art");
  fs::rename(dir / "art/triangle", dir / "art/blob");
  json job = test::tiny_finetune_job(base, "difffit");
  job["images"] = (dir / "art").string();
  auto r = test::run_job_file(dir, job, "ft");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(read_file(dir / "ft/log.jsonl"), Contains("the probe does not know class 'blob'"));
  for (const char* f : {"adapter.safetensors", "before.png", "after.png", "metrics.json"})
    CHECK(fs::exists(dir / "ft" / f));
  const AdapterFile a = load_adapter(dir / "ft/adapter.safetensors");
  CHECK(a.info.classes == std::vector<std::string>{"blob", "circle"});
  CHECK(a.info.settings["data"] == (dir / "art").string());
  const json m = load_json_file(dir / "ft/metrics.json");
  CHECK(m["before"]["fd_shapes"].get<double>() >= 0.0);
  CHECK(m["after"]["fd_shapes"].get<double>() >= 0.0);
  CHECK(m["after"]["probe_accuracy"].get<double>() == -1.0);
  CHECK_THAT(m["fd_reference"].get<std::string>(), Contains("(the training images), 12 images"));

  // `sample` with the adapter draws the folder's classes and skips the Shapes metrics.
  json sample = {{"kind", "sample"},
                 {"model", base.string()},
                 {"adapters", {(dir / "ft/adapter.safetensors").string()}},
                 {"per_class", 1},
                 {"steps", 2},
                 {"probe", test::source_path("assets/models/probe.safetensors").string()}};
  auto s = test::run_job_file(dir, sample, "sample");
  INFO(s.output);
  CHECK(s.exit_code == 0);
  CHECK_THAT(read_file(dir / "sample/log.jsonl"), Contains("no Shapes metrics"));

  // A folder without images: one error naming the field.
  fs::create_directories(dir / "empty/sub");
  job["images"] = (dir / "empty").string();
  auto bad = test::run_job_file(dir, job, "bad");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("'images'") && Contains("no images"));
}
