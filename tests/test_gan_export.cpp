// export_gan: folding an edit into an E2GAN generator, the ONNX and ncnn writers, and the parity check
// against onnxruntime and ncnn (scripts/gan_parity.py in the parity venv, scripts/parity_venv.sh).
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iostream>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "core/atomic_file.h"
#include "core/config.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "distill/e2gan_export.h"
#include "gan/e2gan.h"
#include "gan/export_ncnn.h"
#include "gan/export_onnx.h"
#include "tests/helpers.h"

using namespace atelier;
using json = nlohmann::json;

namespace {

// With InstanceNorm in the convolutional stages where the generator makes it optional, so the exports'
// InstanceNormalization / InstanceNorm layers are covered.
E2GanConfig with_instance_norm(const E2GanConfig& c) {
  json j = to_json(c);
  if (j.contains("norm")) j["norm"] = "instance";
  return from_json<E2GanConfig>(j);
}

E2GanConfig tiny_gan() {
  E2GanConfig c;
  c.channels = {4, 8, 16};
  c.heads = 2;
  c.edit_tokens = 2;
  c.num_edits = 2;
  return with_instance_norm(c);
}

// A random tiny generator file (non-trivial norm affines and biases, so every tensor matters).
std::filesystem::path tiny_generator(const test::TempDir& dir, const std::string& name, std::uint64_t seed) {
  torch::manual_seed(seed);
  E2GanGenerator g(tiny_gan());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : g->named_parameters())
      if (p.key().find("norm") != std::string::npos) p.value().add_(torch::randn_like(p.value()) * 0.2);
    g->edits.normal_(0, 1);
  }
  const auto path = dir / name;
  save_generator(path, g, {tiny_gan(), {"night", "outline"}, 16}, json::object());
  return path;
}

// An edit file as e2gan_concept (lora) writes it: LoRA on the crucial layers, the edit's tokens and the
// base's hash. The up-projections are random so that folding changes the output.
std::filesystem::path tiny_edit(const test::TempDir& dir, const std::filesystem::path& base) {
  E2GanGenerator g = load_generator(base);
  std::vector<std::string> patterns;
  for (const auto& [group, p] : e2gan_crucial_groups()) patterns.insert(patterns.end(), p.begin(), p.end());
  Rng rng(7);
  LoRA lora = LoRA::create(*g, patterns, {.rank = 2, .alpha = 2}, &rng);
  {
    torch::NoGradGuard no_grad;
    for (const auto& l : lora.layers()) l->up.copy_(rng.randn(l->up.sizes()) * 0.1);
  }
  TensorMap tensors = lora.tensors();
  tensors["edit.tokens"] = rng.randn({2, 16});
  const auto path = dir / "edit.safetensors";
  safetensors::save(path, tensors,
                    {{"atelier.kind", "e2gan_edit"},
                     {"edit", "pixel"},
                     {"base_hash", model_hash(*g)},
                     {"ranks", R"({"block": 2, "down": 2, "up": 2})"}});
  return path;
}

bool parity_venv() {
  return std::filesystem::exists(test::source_path(".venv-parity/bin/python"));
}

json export_job(const std::filesystem::path& generator, std::int64_t size) {
  return {{"kind", "export_gan"},
          {"generator", generator.string()},
          {"size", size},
          {"samples", 2},
          {"runs", 3},
          {"parity", parity_venv()},
          {"python", test::source_path(".venv-parity/bin/python").string()},
          {"script", test::source_path("scripts/gan_parity.py").string()}};
}

std::vector<std::string> exported_files(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const auto ext = e.path().extension().string();
    if (ext == ".onnx" || ext == ".param" || ext == ".bin" || e.path().string().find(".tmp") != std::string::npos)
      out.push_back(e.path().filename().string());
  }
  return out;
}

}  // namespace

TEST_CASE("fold_edit merges the edit's LoRA: the plain generator computes what the hooked one does", "[export]") {
  test::TempDir dir;
  const auto base = tiny_generator(dir, "g.safetensors", 1);
  const auto edit = tiny_edit(dir, base);
  FoldedGenerator folded = fold_edit(base.string(), edit.string(), "");
  CHECK(folded.edit == "pixel");
  REQUIRE(folded.tokens.sizes() == torch::IntArrayRef({2, 16}));

  E2GanGenerator hooked = load_generator(base);
  TensorFile f = safetensors::load(edit);
  f.tensors.erase("edit.tokens");
  LoRA lora = LoRA::from_tensors(*hooked, f.tensors, {}, "edit");
  lora.attach(hooked->hooks(), *hooked, 1.0);
  torch::NoGradGuard no_grad;
  auto x = torch::rand({2, 3, 16, 16}) * 2 - 1;
  auto expected = hooked->forward_tokens(x, folded.tokens);
  CHECK(test::max_abs_diff(folded.generator->forward_tokens(x, folded.tokens), expected) < 1e-5);
  CHECK(test::max_abs_diff(load_generator(base)->forward_tokens(x, folded.tokens), expected) > 1e-3);

  // Without an edit file the name picks a row of the table (default: the last).
  CHECK(fold_edit(base.string(), "", "").edit == "outline");
  FoldedGenerator night = fold_edit(base.string(), "", "night");
  CHECK(torch::equal(night.tokens, night.generator->edits[0]));
  CHECK_THROWS_WITH(fold_edit(base.string(), "", "pixel"), Catch::Contains("field 'edit_name'"));
  // An edit trained on another base is refused, naming the file.
  const auto other = tiny_generator(dir, "other.safetensors", 2);
  CHECK_THROWS_WITH(fold_edit(other.string(), edit.string(), ""), Catch::Contains("field 'edit'") &&
                                                                      Catch::Contains("another base") &&
                                                                      Catch::Contains(edit.string()));
}

TEST_CASE("export_gan: ONNX (IR 8, opset 17) and ncnn at 16 and 32 px match the C++ generator", "[export]") {
  test::TempDir dir;
  const auto base = tiny_generator(dir, "g.safetensors", 3);
  const auto edit = tiny_edit(dir, base);
  if (!parity_venv())
    WARN("parity venv missing (run scripts/parity_venv.sh): exporting without the onnxruntime / ncnn checks");
  for (const std::int64_t size : {16, 32}) {
    DYNAMIC_SECTION("size " << size) {
      json job = export_job(base, size);
      job["edit"] = edit.string();
      const std::string name = "export" + std::to_string(size);
      auto r = test::run_job_file(dir, job, name);
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
      const auto run = dir / name;

      const OnnxFileInfo info = read_onnx_info(run / "generator.onnx");
      CHECK(info.ir_version == 8);
      CHECK(info.opset == 17);
      CHECK(info.input_shape == std::vector<std::int64_t>{1, 3, size, size});
      CHECK(info.output_shape == std::vector<std::int64_t>{1, 3, size, size});
      CHECK_FALSE(info.fp16_weights);
      for (const std::string op : {"Conv", "Resize", "LayerNormalization", "MatMul", "Softmax", "Erf", "Tanh"})
        CHECK(std::count(info.op_types.begin(), info.op_types.end(), op) == 1);
      CHECK(read_onnx_info(run / "generator.fp16.onnx").fp16_weights);
      CHECK_NOTHROW(check_onnx_file(run / "generator.onnx"));
      CHECK_NOTHROW(check_onnx_file(run / "generator.fp16.onnx"));
      // float16 weights: fewer bytes (half the weights; node and tensor names do not shrink).
      CHECK(std::filesystem::file_size(run / "generator.fp16.onnx") <
            0.8 * static_cast<double>(std::filesystem::file_size(run / "generator.onnx")));
      CHECK(std::filesystem::file_size(run / "generator.fp16.bin") <
            0.7 * static_cast<double>(std::filesystem::file_size(run / "generator.bin")));
      std::ifstream param(run / "generator.param");
      std::string magic;
      param >> magic;
      CHECK(magic == "7767517");

      if (!parity_venv()) continue;
      const json m = load_json_file(run / "metrics.json");
      const json& results = m.at("parity").at("results");
      REQUIRE(results.size() == 8);  // {onnxruntime, ncnn} x {fp32, fp16} x {random, shapes}
      for (const auto& res : results) {
        INFO(res.dump());
        const double tol = res.at("precision") == "fp32" ? 1e-4 : 2e-2;
        CHECK(res.at("max_abs_error").get<double>() <= tol);
        CHECK(res.at("pass").get<bool>());
      }
      REQUIRE(m.at("parity").at("latency").size() == 4);
      for (const auto& t : m.at("parity").at("latency")) CHECK(t.at("median_ms").get<double>() > 0);
      CHECK(std::filesystem::exists(run / "parity.txt"));
    }
  }
}

TEST_CASE("export_gan: a malformed request fails with one clear error naming the field and writes nothing",
          "[export]") {
  test::TempDir dir;
  const auto base = tiny_generator(dir, "g.safetensors", 4);
  const auto other = tiny_generator(dir, "other.safetensors", 5);
  const auto edit = tiny_edit(dir, other);
  struct Case {
    std::string name, field, message;
    json changes;
  };
  const std::vector<Case> cases = {
      {"size", "size", "multiple of the generator's stride 8", {{"size", 20}}},
      {"other_base", "edit", "another base", {{"edit", edit.string()}}},
      {"missing", "generator", "does not exist", {{"generator", (dir / "nope.safetensors").string()}}},
      {"edit_name", "edit_name", "no edit 'pixel'", {{"edit_name", "pixel"}}},
      {"stem", "output", "has an extension", {{"output", "generator.onnx"}}},
      {"formats", "formats", "tflite", {{"formats", {"tflite"}}}},
      {"python", "parity", "scripts/parity_venv.sh", {{"parity", true}, {"python", (dir / "no-python").string()}}},
  };
  for (const auto& c : cases) {
    json job = export_job(base, 16);
    job["parity"] = false;
    job.update(c.changes);
    auto r = test::run_job_file(dir, job, c.name);
    INFO(c.name << ": " << r.output);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.output, Catch::Contains("field '" + c.field + "'") && Catch::Contains(c.message));
    CHECK(exported_files(dir / c.name).empty());
  }
}

TEST_CASE("ONNX and ncnn writers refuse tokens that do not fit and sizes off the stride", "[export]") {
  test::TempDir dir;
  torch::manual_seed(6);
  E2GanGenerator g(tiny_gan());
  GanExportOptions o;
  o.height = o.width = 16;
  CHECK_THROWS_WITH(write_gan_onnx(dir / "g.onnx", g, torch::zeros({3, 16}), o), Catch::Contains("do not fit"));
  o.height = 12;
  CHECK_THROWS_WITH(write_gan_ncnn(dir / "g.param", dir / "g.bin", g, torch::zeros({2, 16}), o),
                    Catch::Contains("field 'size'"));
  CHECK(exported_files(dir.path()).empty());
}

// Not part of the suite: the latency figures of docs/export.md. The default generator config (random
// weights) exported at 256 x 256 and measured single-threaded (median of 50 runs) in onnxruntime and ncnn:
//   build/tests/atelier_tests "[export-latency]"
TEST_CASE("export_gan latency at 256 x 256, default generator config", "[.][export-latency]") {
  REQUIRE(parity_venv());
  test::TempDir dir;
  torch::manual_seed(0);
  E2GanConfig config = with_instance_norm(E2GanConfig{});
  E2GanGenerator g(config);
  save_generator(dir / "g.safetensors", g, {config, {"edit"}, 256}, json::object());
  json job = export_job(dir / "g.safetensors", 256);
  job["runs"] = 50;
  // On drawn Shapes images at this size onnxruntime differs from the C++ generator by ~5.5e-4 and ncnn
  // by ~1.9e-4 (random inputs: <= 4e-5); docs/export.md lists this as open.
  job["fp32_tolerance"] = 1e-3;
  auto r = test::run_job_file(dir, job, "export");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::cout << read_file(dir / "export" / "parity.txt") << std::flush;
}
