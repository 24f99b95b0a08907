// CLIP BPE tokenizer and CLIPTextModel: parity with transformers (fixtures written by
// scripts/make_clip_text_fixtures.py), the LDM / OpenCLIP single-file names, strict loading errors.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/clip_tokenizer.h"
#include "diffusion/clip_text.h"
#include "tests/helpers.h"

using namespace atelier;
using atelier::test::max_abs_diff;
using atelier::test::source_path;
using atelier::test::TempDir;

namespace {

std::filesystem::path fixture(const std::string& name) {
  return source_path("tests/fixtures/clip_text/" + name);
}

const ClipBPETokenizer& vocabulary() {
  static const ClipBPETokenizer tok = ClipBPETokenizer::load(source_path("assets/text/bpe_simple_vocab_16e6.txt.gz"));
  return tok;
}

json read_json(const std::filesystem::path& path) {
  json j;
  std::ifstream(path) >> j;
  return j;
}

// Max abs difference relative to the reference's scale (at least 1).

const TensorMap& io() {
  static const TensorMap tensors = safetensors::load(fixture("io.safetensors")).tensors;
  return tensors;
}

ClipTextModel tiny_model(const std::string& name, const TensorMap& weights, const std::string& source) {
  ClipTextModel model(read_clip_text_config(fixture("config_" + name + ".json")));
  load_clip_text_state(*model, weights, source);
  model->eval();
  return model;
}

TensorMap weights(const std::string& name) {
  return safetensors::load(fixture("model_" + name + ".safetensors")).tensors;
}

std::string load_error(const std::string& name, const TensorMap& tensors) {
  ClipTextModel model(read_clip_text_config(fixture("config_" + name + ".json")));
  try {
    load_clip_text_state(*model, tensors, "test.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST_CASE("CLIP tokenizer matches transformers' CLIPTokenizer on hard strings", "[clip_text]") {
  const json ref = read_json(fixture("tokens.json"));
  const ClipBPETokenizer& tok = vocabulary();
  REQUIRE(ref.at("context_length") == 77);
  std::vector<std::string> texts;
  for (const auto& c : ref.at("cases")) {
    const auto text = c.at("text").get<std::string>();
    texts.push_back(text);
    INFO("text: '" << text << "'");
    const auto ids = c.at("ids").get<std::vector<std::int32_t>>();
    CHECK(tok.encode(text) == ids);
    CHECK(tok.tokenize({text}, 77, 0).at(0) == c.at("row_pad0").get<std::vector<std::int32_t>>());
    CHECK(tok.decode(ids) == c.at("decoded").get<std::string>());
  }
  const auto rows = tok.tokenize(texts);
  REQUIRE(rows.size() == texts.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO("text: '" << texts[i] << "'");
    CHECK(rows[i] == ref.at("cases")[i].at("row").get<std::vector<std::int32_t>>());
  }
  CHECK(tok.token(ClipBPETokenizer::kEndOfText) == "<|endoftext|>");
  CHECK(tok.token(320) == "a</w>");
  CHECK_THROWS_WITH(tok.decode({49408}), Catch::Contains("id 49408 is outside the vocabulary"));
  CHECK(tok.tokenize({"a cat"}, 4).at(0) == std::vector<std::int32_t>{49406, 320, 2368, 49407});
  CHECK(tok.tokenize({"a cat"}, 3).at(0) == std::vector<std::int32_t>{49406, 320, 49407});
  CHECK(clip_token_tensor(tok.tokenize({"a", "b"})).sizes() == torch::IntArrayRef{2, 77});
}

TEST_CASE("CLIP tokenizer reports missing and corrupt vocabularies", "[clip_text]") {
  TempDir dir("atelier-clip-vocab");
  auto message = [](const std::filesystem::path& path) {
    try {
      ClipBPETokenizer::load(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const auto missing = dir / "none.txt.gz";
  CHECK_THAT(message(missing), Catch::Contains(missing.string()) && Catch::Contains("no such file"));

  const auto corrupt = dir / "corrupt.txt.gz";
  write_file(corrupt, std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10) + std::string(64, '\x7f'));
  CHECK_THAT(message(corrupt), Catch::Contains(corrupt.string()) && Catch::Contains("not a valid gzip file"));

  const auto short_list = dir / "short.txt";  // plain text reads as well as gzip
  write_file(short_list, "#version: 0.2\ni n\nt h\n");
  CHECK_THAT(message(short_list),
             Catch::Contains(short_list.string()) && Catch::Contains("2 merges, expected at least 48894"));

  const auto bad_line = dir / "bad.txt";
  write_file(bad_line, "#version: 0.2\ni n\nthree parts here\n");
  CHECK_THAT(message(bad_line), Catch::Contains(bad_line.string()) &&
                                    Catch::Contains("line 3 is not a merge \"a b\": 'three parts here'"));
}

TEST_CASE("CLIP text parameters are transformers' SD1/SD2 CLIPTextModel keys and shapes", "[clip_text]") {
  for (const char* preset : {"sd15", "sd21"}) {
    INFO(preset);
    const json ref = read_json(fixture(std::string("keys_") + preset + ".json"));
    ClipTextConfig config = clip_text_preset(preset);
    // Every layer has the same keys: build one layer (the full models are 0.5 / 1.4 GB) and compare
    // layer 0 plus the rest; the reference's layer count must be the preset's.
    std::int64_t ref_layers = 0;
    while (ref.contains("text_model.encoder.layers." + std::to_string(ref_layers) + ".mlp.fc1.weight")) ++ref_layers;
    CHECK(ref_layers == config.num_hidden_layers);
    config.num_hidden_layers = 1;
    ClipTextModel model(config);
    const TensorMap params = module_tensors(*model);
    std::size_t expected = 0;
    for (const auto& [name, shape] : ref.items()) {
      if (name.starts_with("text_model.encoder.layers.") && !name.starts_with("text_model.encoder.layers.0.")) continue;
      ++expected;
      INFO(name);
      REQUIRE(params.count(name));
      CHECK(params.at(name).sizes().vec() == shape.get<std::vector<std::int64_t>>());
    }
    CHECK(params.size() == expected);
    CHECK(detect_clip_text_config(params, config).hidden_size == config.hidden_size);
  }
  CHECK_THROWS_WITH(clip_text_preset("sdxl"), Catch::Contains("unknown CLIP text preset 'sdxl'"));
}

TEST_CASE("CLIP text encoder matches transformers CLIPTextModel", "[clip_text]") {
  torch::NoGradGuard no_grad;
  for (const std::string name : {"a", "b"}) {
    INFO("model " << name);
    ClipTextModel model = tiny_model(name, weights(name), "model_" + name + ".safetensors");
    const auto& ids = io().at("ids_" + name);
    const ClipTextOutput out = model->encode(ids);
    CHECK(out.hidden.sizes() == io().at("last_" + name).sizes());
    CHECK(test::relative_diff(out.hidden, io().at("last_" + name)) <= 1e-5);
    CHECK(test::relative_diff(out.pooled, io().at("pooled_" + name)) <= 1e-5);
    CHECK(test::relative_diff(model->forward(ids, 1), io().at("skip1_" + name)) <= 1e-5);
    CHECK(torch::equal(model->forward(ids), out.hidden));
  }
  ClipTextModel a = tiny_model("a", weights("a"), "model_a");
  CHECK(a->config().hidden_act == "quick_gelu");
  CHECK_THROWS_WITH(a->forward(torch::full({1, 4}, 256, torch::kLong)), Catch::Contains("[0, 256)"));
  CHECK_THROWS_WITH(a->forward(torch::zeros({1, 78}, torch::kLong)), Catch::Contains("T <= 77"));
  CHECK_THROWS_WITH(a->forward(torch::zeros({1, 4}, torch::kLong), 3), Catch::Contains("skip 3"));
}

TEST_CASE("CLIP text encoder loads LDM, OpenCLIP and transformers 5 names to the same model", "[clip_text]") {
  torch::NoGradGuard no_grad;
  const auto& ids_a = io().at("ids_a");
  const auto ref_a = tiny_model("a", weights("a"), "model_a")->forward(ids_a);

  // SD1 single file: the whole checkpoint, the text encoder under cond_stage_model.transformer.
  TensorMap ldm;
  for (const auto& [k, v] : weights("a")) ldm["cond_stage_model.transformer." + k] = v;
  ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch::arange(77).unsqueeze(0);
  ldm["model.diffusion_model.input_blocks.0.0.weight"] = torch::zeros({2, 4, 3, 3});
  ldm["first_stage_model.decoder.conv_in.weight"] = torch::zeros({2, 4, 3, 3});
  ClipTextKeyDialect d{};
  clip_text_tensors_to_transformers(ldm, 3, &d);
  CHECK(d == ClipTextKeyDialect::LDM);
  CHECK(torch::equal(tiny_model("a", ldm, "sd1.safetensors")->forward(ids_a), ref_a));
  TensorMap ckpt;  // a .ckpt flattened by load_tensor_file
  for (const auto& [k, v] : ldm) ckpt["state_dict." + k] = v;
  CHECK(torch::equal(tiny_model("a", ckpt, "sd1.ckpt")->forward(ids_a), ref_a));
  const ClipTextConfig detected = detect_clip_text_config(ldm);
  CHECK(detected.num_hidden_layers == 3);
  CHECK(detected.hidden_size == 32);
  CHECK(detected.intermediate_size == 64);
  CHECK(detected.vocab_size == 256);
  CHECK(detected.hidden_act == "quick_gelu");

  // transformers 5 writes CLIPTextModel without the "text_model." prefix.
  TensorMap bare;
  for (const auto& [k, v] : weights("a")) bare[k.substr(std::string("text_model.").size())] = v;
  clip_text_tensors_to_transformers(bare, 3, &d);
  CHECK(d == ClipTextKeyDialect::Transformers);
  CHECK(torch::equal(tiny_model("a", bare, "v5.safetensors")->forward(ids_a), ref_a));

  // SD2 single file: OpenCLIP names, one block more than the model uses, a text projection.
  const auto& ids_b = io().at("ids_b");
  const auto openclip = safetensors::load(fixture("ldm_openclip_b.safetensors")).tensors;
  clip_text_tensors_to_transformers(openclip, 2, &d);
  CHECK(d == ClipTextKeyDialect::OpenCLIP);
  CHECK(torch::equal(tiny_model("b", openclip, "sd2.safetensors")->forward(ids_b),
                     tiny_model("b", weights("b"), "model_b")->forward(ids_b)));
  const ClipTextConfig sd2 = detect_clip_text_config(openclip);
  CHECK(sd2.num_hidden_layers == 2);
  CHECK(sd2.hidden_act == "gelu");

  // A diffusers text_encoder/ folder: config.json beside the weights.
  TempDir dir("atelier-clip-text");
  std::filesystem::copy_file(fixture("config_b.json"), dir / "config.json");
  safetensors::save(dir / "model.safetensors", weights("b"));
  ClipTextModel loaded = load_clip_text(dir / "model.safetensors");
  CHECK(loaded->config().num_attention_heads == 4);
  CHECK(test::relative_diff(loaded->encode(ids_b).pooled, io().at("pooled_b")) <= 1e-5);
}

TEST_CASE("CLIP text encoder loading fails with every problem named", "[clip_text]") {
  auto tensors = weights("a");
  tensors.erase("text_model.encoder.layers.1.mlp.fc2.bias");
  tensors["text_model.encoder.layers.2.self_attn.q_proj.weight"] = torch::zeros({32, 16});
  tensors["text_model.extra.weight"] = torch::zeros({1});
  std::string msg = load_error("a", tensors);
  CHECK_THAT(msg, Catch::Contains("test.safetensors (transformers names)"));
  CHECK_THAT(msg, Catch::Contains("missing 'text_model.encoder.layers.1.mlp.fc2.bias'"));
  CHECK_THAT(msg, Catch::Contains("'text_model.encoder.layers.2.self_attn.q_proj.weight' has shape [32, 16], "
                                  "expected [32, 32]"));
  CHECK_THAT(msg, Catch::Contains("unexpected 'text_model.extra.weight'"));

  // OpenCLIP names: the error gives the transformers key and the file's key.
  auto openclip = safetensors::load(fixture("ldm_openclip_b.safetensors")).tensors;
  openclip["cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.weight"] = torch::zeros({64, 31});
  openclip.erase("cond_stage_model.model.ln_final.bias");
  msg = load_error("b", openclip);
  CHECK_THAT(msg, Catch::Contains("test.safetensors (OpenCLIP names)"));
  CHECK_THAT(msg, Catch::Contains("'text_model.encoder.layers.1.mlp.fc1.weight' (file: "
                                  "'cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.weight') has shape "
                                  "[64, 31], expected [64, 32]"));
  CHECK_THAT(msg, Catch::Contains("missing 'text_model.final_layer_norm.bias'"));

  TempDir dir("atelier-clip-config");
  write_file(dir / "config.json", R"({"model_type": "clip_text_model", "hidden_act": "relu"})");
  CHECK_THROWS_WITH(read_clip_text_config(dir / "config.json"),
                    Catch::Contains("config.json") && Catch::Contains("hidden_act"));
  write_file(dir / "config.json", R"({"model_type": "t5"})");
  CHECK_THROWS_WITH(read_clip_text_config(dir / "config.json"), Catch::Contains("model_type 't5'"));
  CHECK_THROWS_WITH(detect_clip_text_config(TensorMap{{"foo.weight", torch::zeros({2, 2})}}),
                    Catch::Contains("no 'text_model.embeddings.token_embedding.weight'"));
}
