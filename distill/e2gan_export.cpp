#include "distill/e2gan_export.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "core/atomic_file.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/shapes.h"
#include "gan/export_ncnn.h"
#include "gan/export_onnx.h"

namespace atelier {
namespace {

bool has(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

// Every check of a request that needs no file written, so a bad request leaves the run folder empty.
// A parity tool path (the venv's Python, the script): as given when it exists, else a relative path taken
// from the source tree this build came from (the studio runs jobs from its workspace folder).
std::string tool_path(const std::string& p) {
  const std::filesystem::path path(p);
  if (path.is_absolute() || std::filesystem::exists(path)) return p;
  const auto in_tree = std::filesystem::path(ATELIER_SOURCE_DIR) / path;
  return std::filesystem::exists(in_tree) ? in_tree.string() : p;
}

void check_request(const ExportGanConfig& c) {
  if (c.generator.empty()) fail_field("generator", "is required: a generator file (e2gan_base)");
  check_export_size(c.size, c.size, "size");
  if (c.formats.empty()) fail_field("formats", "is empty: choose onnx and/or ncnn");
  if (c.precisions.empty()) fail_field("precisions", "is empty: choose fp32 and/or fp16");
  const std::filesystem::path stem(c.output);
  if (c.output.empty() || c.output.find('/') != std::string::npos || c.output == "." || c.output == "..")
    fail_field("output", "'", c.output, "' is not a plain file-name stem (e.g. 'generator')");
  if (stem.has_extension())
    fail_field("output", "'", c.output, "' has an extension; give the stem only (the job adds .onnx, .param, .bin)");
  if (c.parity) {
    if (!std::filesystem::exists(tool_path(c.python)))
      fail_field("parity", "the parity venv's Python '", c.python,
                 "' does not exist: run scripts/parity_venv.sh (or set parity to false)");
    if (!std::filesystem::exists(tool_path(c.script))) fail_field("script", "'", c.script, "' does not exist");
  }
}

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

std::string joined(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& s : list) out += (out.empty() ? "" : ",") + s;
  return out;
}

// The C++ generator's outputs on random inputs in [-1, 1] and on Shapes scenes drawn at the export size.
TensorMap parity_reference(E2GanGenerator& g, const torch::Tensor& tokens, const ExportGanConfig& c) {
  torch::NoGradGuard no_grad;
  g->eval();
  Rng rng(static_cast<std::uint64_t>(c.seed));
  shapes::Spec spec;
  spec.size = static_cast<int>(c.size);
  spec.seed = static_cast<std::uint64_t>(c.seed);
  TensorMap out;
  out["random.input"] = rng.rand({c.samples, 3, c.size, c.size}) * 2 - 1;
  out["shapes.input"] = shapes::make_batch(spec, 1, 0, c.samples).images.to(torch::kFloat32);
  for (const std::string kind : {"random", "shapes"}) {
    std::vector<torch::Tensor> ys;
    const auto& x = out[kind + ".input"];
    for (std::int64_t k = 0; k < c.samples; ++k) ys.push_back(g->forward_tokens(x.slice(0, k, k + 1), tokens));
    out[kind + ".output"] = torch::cat(ys).contiguous();
    out[kind + ".input"] = x.contiguous();
  }
  return out;
}

// Runs the parity script; returns parity.json. Error with the tail of its log when it fails.
json run_parity(const ExportGanConfig& c, JobContext& ctx) {
  const auto log = ctx.path("parity.log");
  const std::string cmd = quoted(tool_path(c.python)) + " " + quoted(tool_path(c.script)) + " --dir " +
                          quoted(ctx.run_dir.string()) + " --stem " + quoted(c.output) + " --formats " +
                          joined(c.formats) + " --precisions " + joined(c.precisions) + " --threads " +
                          std::to_string(c.threads) + " --runs " + std::to_string(c.runs) + " --fp32-tolerance " +
                          std::to_string(c.fp32_tolerance) + " --fp16-tolerance " + std::to_string(c.fp16_tolerance) +
                          " > " + quoted(log.string()) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::string text = std::filesystem::exists(log) ? read_file(log) : std::string();
    if (text.size() > 2000) text = "..." + text.substr(text.size() - 2000);
    fail("parity check failed (exit status ", rc, "; parity.log):\n", text);
  }
  return load_json_file(ctx.path("parity.json"));
}

}  // namespace

FoldedGenerator fold_edit(const std::string& generator_file, const std::string& edit_file,
                          const std::string& edit_name) {
  FoldedGenerator out;
  out.generator = with_field("generator", [&] { return load_generator(generator_file, &out.info); });
  auto& g = out.generator;
  if (edit_file.empty()) {
    const auto row = edit_name.empty()
                         ? out.info.config.num_edits - 1
                         : with_field("edit_name", [&] { return edit_index(out.info, edit_name, generator_file); });
    out.edit = out.info.edits[static_cast<std::size_t>(row)];
    out.tokens = g->edits[row].detach().clone();
    return out;
  }
  with_field("edit", [&] {
    if (!std::filesystem::exists(edit_file)) fail(edit_file, ": edit file does not exist");
    TensorFile f = safetensors::load(edit_file);
    auto meta = [&](const std::string& key) {
      auto it = f.metadata.find(key);
      return it == f.metadata.end() ? std::string() : it->second;
    };
    if (meta("atelier.kind") != "e2gan_edit")
      fail(edit_file, ": not an E2GAN edit file (kind '", meta("atelier.kind"), "')",
           meta("atelier.kind") == "e2gan_generator" ? "; a whole generator goes in 'generator'" : "");
    const std::string base_hash = model_hash(*g);
    if (meta("base_hash") != base_hash)
      fail(edit_file, ": trained on another base generator (base_hash ", meta("base_hash").substr(0, 12), "..., ",
           generator_file, " is ", base_hash.substr(0, 12), "...)");
    out.edit = meta("edit");
    auto tokens = f.tensors.find("edit.tokens");
    if (tokens == f.tensors.end()) fail(edit_file, ": no 'edit.tokens' tensor");
    const auto& c = out.info.config;
    if (tokens->second.sizes() != torch::IntArrayRef({c.edit_tokens, c.channels[2]}))
      fail(edit_file, ": edit.tokens ", tokens->second.sizes(), " do not fit the generator ([", c.edit_tokens, ", ",
           c.channels[2], "])");
    out.tokens = tokens->second.to(torch::kFloat32).clone();
    TensorMap lora_tensors = f.tensors;
    lora_tensors.erase("edit.tokens");
    LoRA lora = LoRA::from_tensors(*g, lora_tensors, {}, edit_file);
    lora.merge(*g, 1.0);
  });
  if (!edit_name.empty() && edit_name != out.edit)
    fail_field("edit_name", "'", edit_name, "' does not match the edit file's edit '", out.edit,
               "' (leave it empty with an edit file)");
  return out;
}

void export_gan_job(const ExportGanConfig& c, JobContext& ctx) {
  // Config -> build: check the request, fold the edit in, compute the reference outputs.
  check_request(c);
  FoldedGenerator folded = fold_edit(c.generator, c.edit, c.edit_name);
  auto& g = folded.generator;
  g->to(torch::kCPU);
  g->eval();
  ctx.report.info("exporting edit '" + folded.edit + "' at " + std::to_string(c.size) + "x" + std::to_string(c.size));
  if (c.parity) safetensors::save(ctx.path("parity_reference.safetensors"), parity_reference(g, folded.tokens, c));

  // Export: one file set per format and precision.
  json files = json::object();
  for (const auto& precision : c.precisions) {
    GanExportOptions o{.height = c.size,
                       .width = c.size,
                       .precision = precision == "fp16" ? WeightPrecision::FP16 : WeightPrecision::FP32,
                       .edit = folded.edit};
    const std::string stem = c.output + (precision == "fp16" ? ".fp16" : "");
    if (has(c.formats, "onnx")) {
      write_gan_onnx(ctx.path(stem + ".onnx"), g, folded.tokens, o);
      files["onnx." + precision] = {{"model", stem + ".onnx"},
                                    {"bytes", std::filesystem::file_size(ctx.path(stem + ".onnx"))}};
      ctx.report.artifact("onnx " + precision, ctx.path(stem + ".onnx"));
    }
    if (has(c.formats, "ncnn")) {
      write_gan_ncnn(ctx.path(stem + ".param"), ctx.path(stem + ".bin"), g, folded.tokens, o);
      files["ncnn." + precision] = {{"param", stem + ".param"},
                                    {"model", stem + ".bin"},
                                    {"bytes", std::filesystem::file_size(ctx.path(stem + ".bin"))}};
      ctx.report.artifact("ncnn " + precision, ctx.path(stem + ".param"));
    }
    ctx.check_cancel();
  }

  // Parity and latency, then metrics.json; a runtime outside its tolerance fails the job.
  json m = {{"edit", folded.edit}, {"size", c.size}, {"files", files}};
  json parity;
  if (c.parity) {
    parity = run_parity(c, ctx);
    m["parity"] = parity;
    ctx.report.artifact("parity", ctx.path("parity.txt"));
  }
  write_file_atomic(ctx.path("metrics.json"), m.dump(2) + "\n");
  if (c.parity) {
    for (const auto& r : parity.at("results"))
      if (!r.at("pass").get<bool>())
        fail("parity: ", r.at("runtime").get<std::string>(), " ", r.at("precision").get<std::string>(), " on ",
             r.at("inputs").get<std::string>(), " inputs differs from the generator by ",
             r.at("max_abs_error").get<double>(), " > tolerance ", r.at("tolerance").get<double>(), " (parity.txt)");
    ctx.report.info("parity: every runtime within tolerance (parity.txt)");
  }
}

}  // namespace atelier
