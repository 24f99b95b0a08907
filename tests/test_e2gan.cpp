// E2GAN: the generator and discriminator (shapes, LoRA placement, files), edit pairs, k-means selection,
// SDEdit, and the e2gan_data -> e2gan_base -> e2gan_concept chain end to end on a tiny base.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <set>

#include "adapters/lora.h"
#include "core/config.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/edit_pairs.h"
#include "diffusion/generate.h"
#include "diffusion/model_file.h"
#include "distill/e2gan.h"
#include "eval/metrics.h"
#include "gan/e2gan.h"
#include "tests/helpers.h"

using namespace atelier;
using json = nlohmann::json;

namespace {

E2GanConfig tiny_gan(std::int64_t edits = 2) {
  E2GanConfig c;
  c.channels = {4, 8, 16};
  c.heads = 2;
  c.edit_tokens = 2;
  c.num_edits = edits;
  return c;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

TEST_CASE("E2GAN generator: any multiple of 8 in, same size out, in [-1, 1]; other sizes are an error", "[gan]") {
  torch::manual_seed(0);
  E2GanGenerator g(tiny_gan());
  for (auto [h, w] : {std::pair{8, 8}, std::pair{32, 32}, std::pair{48, 24}, std::pair{64, 64}}) {
    auto x = torch::rand({2, 3, h, w}) * 2 - 1;
    auto y = g->forward(x, torch::tensor({0, 1}));
    CHECK(y.sizes() == x.sizes());
    CHECK(y.abs().max().item<double>() <= 1.0);
  }
  CHECK_THROWS_WITH(g->forward(torch::zeros({1, 3, 30, 32}), torch::tensor({0})), Catch::Contains("multiples of 8"));
  // Edits differ: the same input under two edit rows gives two outputs (tokens are random at init).
  auto x = torch::rand({1, 3, 16, 16});
  CHECK(test::max_abs_diff(g->forward(x, torch::tensor({0})), g->forward(x, torch::tensor({1}))) > 0);
  // forward_tokens with a row's tokens is forward with that row.
  CHECK(test::max_abs_diff(g->forward_tokens(x, g->edits[1]), g->forward(x, torch::tensor({1}))) == 0);
  const auto row = g->add_edit(g->edits.detach().mean(0));
  CHECK(row == 2);
  CHECK(g->config().num_edits == 3);
  CHECK(g->edits.size(0) == 3);
}

TEST_CASE("E2GAN LoRA sits on the crucial layers only: down/up-sampling and the transformer block", "[gan]") {
  E2GanGenerator g(tiny_gan());
  std::set<std::string> all;
  for (const auto& [group, patterns] : e2gan_crucial_groups()) {
    LoRA lora = LoRA::create(*g, patterns, {.rank = 2, .alpha = 2});
    for (const auto& p : lora.paths()) {
      INFO(p);
      CHECK(starts_with(p, group == "block" ? "block." : group + "."));
      CHECK_FALSE(starts_with(p, "res."));
      all.insert(p);
    }
  }
  CHECK(all.size() == 3 + 7 + 3);
  // A fresh LoRA attached leaves the output unchanged (up-projections start at zero).
  auto x = torch::rand({1, 3, 16, 16}) * 2 - 1;
  auto before = g->forward(x, torch::tensor({0}));
  LoRA lora = LoRA::create(*g, e2gan_crucial_groups()[1].second, {.rank = 2, .alpha = 2});
  lora.attach(g->hooks(), *g, 1.0);
  CHECK(test::max_abs_diff(g->forward(x, torch::tensor({0})), before) == 0);
}

TEST_CASE("PatchGAN: one logit per patch; frozen, gradients reach the image but not the discriminator", "[gan]") {
  PatchDiscriminator d(PatchDiscriminatorConfig{8});
  auto in = torch::rand({2, 3, 32, 32});
  auto out = torch::rand({2, 3, 32, 32}, torch::requires_grad());
  CHECK(d(in, out).sizes() == std::vector<std::int64_t>{2, 1, 6, 6});
  auto frozen = d->forward(in, out, /*frozen=*/true);
  CHECK(test::max_abs_diff(frozen, d(in, out)) == 0);
  lsgan_g_loss(frozen).backward();
  CHECK(out.grad().defined());
  CHECK(out.grad().abs().sum().item<double>() > 0);
  for (const auto& p : d->parameters()) CHECK_FALSE(p.grad().defined());
  CHECK_THROWS_WITH(d(torch::zeros({1, 3, 8, 8}), torch::zeros({1, 3, 8, 8})), Catch::Contains("16x16"));
  // LSGAN on hand-computed values.
  CHECK(lsgan_d_loss(torch::ones({4}), torch::zeros({4})).item<double>() == 0);
  CHECK(lsgan_g_loss(torch::zeros({4})).item<double>() == 1);
}

TEST_CASE("generator files round-trip; other files are one clear error", "[gan]") {
  test::TempDir dir;
  torch::manual_seed(1);
  E2GanGenerator g(tiny_gan());
  save_generator(dir / "g.safetensors", g, {tiny_gan(), {"night", "outline"}, 16}, json::object());
  GeneratorInfo info;
  E2GanGenerator back = load_generator(dir / "g.safetensors", &info);
  CHECK(info.edits == std::vector<std::string>{"night", "outline"});
  CHECK(info.image_size == 16);
  CHECK(edit_index(info, "outline", "g") == 1);
  CHECK_THROWS_WITH(edit_index(info, "pixel", "g"), Catch::Contains("night, outline"));
  auto x = torch::rand({1, 3, 16, 16});
  CHECK(test::max_abs_diff(back->forward(x, torch::tensor({1})), g->forward(x, torch::tensor({1}))) == 0);
  safetensors::save(dir / "other.safetensors", {{"w", torch::zeros({2})}});
  CHECK_THROWS_WITH(load_generator(dir / "other.safetensors"), Catch::Contains("not an E2GAN generator"));
  CHECK_THROWS_WITH(load_generator(dir / "missing.safetensors"), Catch::Contains("does not exist"));
}

TEST_CASE("edit pairs round-trip as uint8 images; a malformed file names the tensor", "[gan][data]") {
  test::TempDir dir;
  EditPairs p;
  p.edit = "night";
  p.classes = {"circle", "square"};
  p.info = {{"strength", 0.6}};
  auto img = [](std::int64_t n) { return torch::rand({n, 3, 8, 8}) * 2 - 1; };
  p.train = {img(5), img(5), img(5), torch::tensor({0, 1, 0, 1, 1})};
  p.val = {img(2), img(2), torch::Tensor(), torch::tensor({1, 0})};
  save_edit_pairs(dir / "p.safetensors", p);
  EditPairs back = load_edit_pairs(dir / "p.safetensors");
  CHECK(back.edit == "night");
  CHECK(back.classes == p.classes);
  CHECK(back.info["strength"] == 0.6);
  CHECK(back.train.size() == 5);
  CHECK(back.val.size() == 2);
  CHECK_FALSE(back.val.truth.defined());
  CHECK(test::max_abs_diff(back.train.input, p.train.input) <= 1.0 / 127.5);  // quantised to 8 bits
  CHECK(torch::equal(back.train.label, p.train.label));
  CHECK(torch::equal(back.train.subset(torch::tensor({4})).label, torch::tensor({1})));
  // A pairs file without its teacher images.
  TensorMap t = safetensors::load(dir / "p.safetensors").tensors;
  t.erase("train.teacher");
  safetensors::save(dir / "bad.safetensors", t,
                    {{"atelier.kind", "edit_pairs"}, {"edit", "x"}, {"classes", "[]"}, {"info", "{}"}});
  CHECK_THROWS_WITH(load_edit_pairs(dir / "bad.safetensors"), Catch::Contains("train.teacher"));
}

TEST_CASE("k-means representatives: one sample per well-separated cluster, nearest its centre", "[gan][metrics]") {
  Rng rng(3);
  // Three tight clusters around (0,0), (10,0), (0,10); the exact centre sample of each is present.
  std::vector<torch::Tensor> points;
  const std::vector<std::pair<double, double>> centres = {{0, 0}, {10, 0}, {0, 10}};
  for (const auto& [cx, cy] : centres) {
    points.push_back(torch::tensor({{cx, cy}}));
    points.push_back(torch::tensor({{cx, cy}}) + 0.5 * torch::tensor({{1.0, 0.0}}));
    points.push_back(torch::tensor({{cx, cy}}) - 0.5 * torch::tensor({{1.0, 0.0}}));
    points.push_back(torch::tensor({{cx, cy}}) + 0.4 * torch::tensor({{0.0, 1.0}}));
  }
  auto x = torch::cat(points).to(torch::kFloat);
  const auto picked = kmeans_representatives(x, 3, rng);
  // Each cluster's first point (the centre; the others are symmetric around it except the last).
  REQUIRE(picked.size() == 3);
  std::set<std::int64_t> clusters;
  for (auto i : picked) clusters.insert(i / 4);
  CHECK(clusters.size() == 3);
  CHECK(kmeans_representatives(x, 50, rng).size() == 12);  // k > N: every sample once
  CHECK(psnr(torch::zeros({1, 3, 4, 4}), torch::zeros({1, 3, 4, 4}).fill_(0.2)) == Approx(10 * std::log10(4 / 0.04)));
}

TEST_CASE("SDEdit: strength 0 returns the input, strength 1 is plain sampling from the same noise", "[gan][generate]") {
  test::TempDir dir;
  DiTModelInfo info;
  DiT model = load_dit_model(test::tiny_base_model(dir), &info);
  const auto size = model->config().input_size;
  auto images = torch::rand({2, 3, size, size}) * 2 - 1;
  auto labels = torch::tensor({0, 1});
  SamplerSettings s;
  s.steps = 4;
  ImageInit init{images, 0.0};
  Rng a(5), b(5);
  CHECK(torch::equal(generate(model, info, labels, s, a, {}, &init), images));
  init.strength = 1.0;
  Rng c(5);
  auto full = generate(model, info, labels, s, c, {}, &init);
  auto plain = generate(model, info, labels, s, b);
  // At strength 1 the first timestep is 999, where the input's weight sqrt(abar) is tiny but not zero.
  CHECK(test::max_abs_diff(full, plain) <= 1e-2 * plain.abs().max().item<double>());
  init.strength = 0.5;
  s.sampler = "euler";
  CHECK_THROWS_WITH(generate(model, info, labels, s, a, {}, &init), Catch::Contains("dpmpp_2m"));
  s.sampler = "dpmpp_2m";
  init.images = torch::zeros({2, 3, size + 8, size + 8});
  CHECK_THROWS_WITH(generate(model, info, labels, s, a, {}, &init), Catch::Contains("do not match"));
}

TEST_CASE("rank search rule: the smallest rank within the tolerance of the best trial, rank 0 included", "[gan]") {
  // Rank 0 (no LoRA on the group) within 2% of the best: chosen, not overridden by a larger rank also within it.
  CHECK(smallest_rank_within({{0, 0.1010}, {1, 0.1020}, {2, 0.1000}, {4, 0.1005}}, 0.02) == 0);
  // Only the larger ranks are within 2%: the smallest of them.
  CHECK(smallest_rank_within({{0, 0.2000}, {1, 0.1100}, {2, 0.1010}, {4, 0.1000}, {8, 0.0995}}, 0.02) == 2);
  // No tolerance: the best trial.
  CHECK(smallest_rank_within({{0, 0.2000}, {1, 0.1100}, {2, 0.1010}, {4, 0.1000}, {8, 0.0995}}, 0.0) == 8);
  CHECK_THROWS_WITH(smallest_rank_within({}, 0.02), Catch::Contains("no trials"));
}

TEST_CASE("e2gan: teacher pairs -> base generator -> new edit with rank search, and the baselines",
          "[gan][distill][cli]") {
  test::TempDir dir;
  const auto base = test::tiny_base_model(dir);
  // Two edits' teachers: DiffFit adapters of the tiny base to the night and outline styles.
  std::vector<std::string> pair_files;
  for (const char* style : {"night", "outline", "pixel"}) {
    json ft = test::tiny_finetune_job(base, "difffit");
    ft["styles"] = {style};
    ft["probe"] = "";
    auto r = test::run_job_file(dir, ft, std::string("teacher_") + style);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    json data = {{"kind", "e2gan_data"},
                 {"teacher", base.string()},
                 {"adapter", (dir / (std::string("teacher_") + style) / "adapter.safetensors").string()},
                 {"count", 12},
                 {"select", 8},
                 {"val_count", 8},
                 {"steps", 4},
                 {"batch", 8},
                 {"probe", test::source_path("assets/models/probe.safetensors").string()}};
    r = test::run_job_file(dir, data, std::string("pairs_") + style);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    pair_files.push_back((dir / (std::string("pairs_") + style) / "pairs.safetensors").string());
    const EditPairs p = load_edit_pairs(pair_files.back());
    CHECK(p.edit == style);      // named after the adapter's style
    CHECK(p.train.size() == 8);  // 12 edited, 8 representatives kept
    CHECK(p.val.size() == 8);
    REQUIRE(p.train.truth.defined());
    CHECK(p.train.input.size(2) == 16);
    CHECK(std::filesystem::exists(dir / (std::string("pairs_") + style) / "pairs.png"));
    const json m = load_json_file(dir / (std::string("pairs_") + style) / "metrics.json");
    CHECK(m.at("teacher_vs_truth").contains("psnr"));
    CHECK(m.at("teacher_seconds_per_image").get<double>() > 0);
  }

  json gan = {{"kind", "e2gan_base"},
              {"pairs", {pair_files[0], pair_files[1]}},
              {"channels", {4, 8, 16}},
              {"heads", 2},
              {"edit_tokens", 2},
              {"disc_width", 4},
              {"steps", 4},
              {"batch", 4},
              {"eval_every", 2},
              {"checkpoint_every", 2},
              {"probe", ""}};
  auto r = test::run_job_file(dir, gan, "gan_base");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  GeneratorInfo info;
  const auto generator = dir / "gan_base" / "generator.safetensors";
  E2GanGenerator g = load_generator(generator, &info);
  CHECK(info.edits == std::vector<std::string>{"night", "outline"});
  const json bm = load_json_file(dir / "gan_base" / "metrics.json");
  CHECK(bm.at("edits").contains("night"));
  CHECK(bm.at("edits").at("outline").contains("l1_truth"));

  json concept_job = {{"kind", "e2gan_concept"},
                      {"generator", generator.string()},
                      {"pairs", pair_files[2]},
                      {"ranks", {1, 2}},
                      {"search_steps", 2},
                      {"disc_width", 4},
                      {"steps", 4},
                      {"batch", 4},
                      {"eval_every", 1000},
                      {"probe", ""}};
  r = test::run_job_file(dir, concept_job, "concept");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  // The rank search logs one trial per (group, candidate rank) and a rank per group.
  const json log = load_json_file(dir / "concept" / "rank_search.json");
  CHECK(log.size() == 3 * 2);
  const json cm = load_json_file(dir / "concept" / "metrics.json");
  for (const char* group : {"down", "block", "up"}) {
    const auto rank = cm.at("ranks").at(group).get<std::int64_t>();
    CHECK((rank == 1 || rank == 2));
  }
  // The edit file holds LoRA factors of crucial layers and the edit's tokens, nothing of the base.
  const TensorFile edit = safetensors::load(dir / "concept" / "edit.safetensors");
  CHECK(edit.metadata.at("edit") == "pixel");
  std::int64_t stored = 0;
  for (const auto& [name, t] : edit.tensors) {
    INFO(name);
    const bool lora = name.find(".lora_") != std::string::npos || name.find(".alpha") != std::string::npos;
    CHECK((name == "edit.tokens" || lora));
    CHECK_FALSE(starts_with(name, "res."));
    if (name.find(".alpha") == std::string::npos) stored += t.numel();
  }
  CHECK(stored == cm.at("stored_parameters").get<std::int64_t>());
  CHECK(cm.at("stored_fraction").get<double>() < 1.0);

  SECTION("the baselines write whole generators") {
    for (const char* method : {"scratch", "full"}) {
      json j = concept_job;
      j["method"] = method;
      auto rr = test::run_job_file(dir, j, method);
      INFO(rr.output);
      REQUIRE(rr.exit_code == 0);
      GeneratorInfo gi;
      (void)load_generator(dir / method / "edit.safetensors", &gi);
      CHECK(gi.edits.back() == "pixel");
      const json m = load_json_file(dir / method / "metrics.json");
      CHECK(m.at("stored_fraction").get<double>() > 0.9);  // the whole generator (scratch: one edit row)
    }
  }
  SECTION("bad input is one named error") {
    json j = concept_job;
    j["pairs"] = pair_files[0];  // 'night' is an edit of the base already
    auto rr = test::run_job_file(dir, j, "dup");
    CHECK(rr.exit_code != 0);
    CHECK_THAT(rr.output, Catch::Contains("edit") && Catch::Contains("already"));
    j = gan;
    j["pairs"] = json::array();
    rr = test::run_job_file(dir, j, "no_pairs");
    CHECK(rr.exit_code != 0);
    CHECK_THAT(rr.output, Catch::Contains("pairs"));
    json d = {{"kind", "e2gan_data"}, {"teacher", base.string()}, {"probe", ""}};
    rr = test::run_job_file(dir, d, "no_adapter");
    CHECK(rr.exit_code != 0);
    CHECK_THAT(rr.output, Catch::Contains("adapter"));
  }
}

TEST_CASE("e2gan_base: SIGKILL, then --resume, ends with the uninterrupted generator", "[gan][resume][cli]") {
  test::TempDir dir;
  // Pairs written directly (no teacher needed to test the training loop's resume).
  EditPairs p;
  p.edit = "night";
  p.classes = {"circle"};
  Rng rng(2);
  p.train = {rng.rand({16, 3, 16, 16}) * 2 - 1, rng.rand({16, 3, 16, 16}) * 2 - 1, torch::Tensor(),
             torch::zeros({16}, torch::kLong)};
  save_edit_pairs(dir / "pairs.safetensors", p);
  json job = {{"kind", "e2gan_base"},
              {"pairs", {(dir / "pairs.safetensors").string()}},
              {"channels", {4, 8, 16}},
              {"heads", 2},
              {"edit_tokens", 2},
              {"disc_width", 4},
              {"steps", 40},
              {"batch", 4},
              {"eval_every", 1000},
              {"checkpoint_every", 2},
              {"probe", ""}};
  // One thread per process: with two, the GAN's CPU arithmetic was seen to differ between runs by ~1e-9 when
  // another multi-threaded process shared the cores (the library's threading under load), which Adam then
  // amplifies over the remaining steps; resume itself is exact, and this test compares bit for bit.
  struct OneThread {
    OneThread() { ::setenv("ATELIER_THREADS", "1", 1); }
    ~OneThread() { ::unsetenv("ATELIER_THREADS"); }
  } one_thread;
  test::check_kill_and_resume(job, "generator.safetensors");
}
