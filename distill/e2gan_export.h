// export_gan: an E2GAN generator with one edit folded in, exported for mobile runtimes (ONNX and ncnn,
// float32 and float16 weights; gan/export_onnx.h, gan/export_ncnn.h), with a parity report.
//
// Folding: the base generator file (e2gan_base, or a whole generator from e2gan_concept's scratch/full
// methods) plus optionally an edit file (e2gan_concept's LoRA method). The edit file must have been
// trained on this very base (its base_hash equals model_hash of the base); its LoRA is merged into the
// weights (W += alpha / r * B A) and its tokens become the exported edit. Without an edit file,
// `edit_name` picks a row of the generator's edit table (default: the last).
//
// Parity: the job writes the C++ generator's outputs on random inputs and on Shapes images drawn at the
// export size (parity_reference.safetensors), then runs scripts/gan_parity.py with the parity venv's
// Python (scripts/parity_venv.sh creates .venv-parity): onnx.checker, onnxruntime and ncnn on the same
// inputs, max abs error against tolerances (fp32 1e-4, fp16 2e-2) and single-thread latency, into
// parity.json / parity.txt and metrics.json. docs/export.md has the graph, tolerances and measurements.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "gan/e2gan.h"

namespace atelier {

struct FoldedGenerator {
  E2GanGenerator generator{nullptr};  // the edit's LoRA merged in
  GeneratorInfo info;
  std::string edit;      // the exported edit's name
  torch::Tensor tokens;  // [edit_tokens, c2]
};

// Loads `generator_file` and folds in `edit_file` (empty: none). Errors name the field ('generator',
// 'edit', 'edit_name') and the file: a missing or wrong-kind file, an edit trained on another base, an
// unknown edit name.
FoldedGenerator fold_edit(const std::string& generator_file, const std::string& edit_file,
                          const std::string& edit_name);

struct ExportGanConfig {
  std::string generator;
  std::string edit;
  std::string edit_name;
  std::int64_t size = 256;
  std::vector<std::string> formats{"onnx", "ncnn"};
  std::vector<std::string> precisions{"fp32", "fp16"};
  bool parity = true;
  std::int64_t samples = 2;
  std::int64_t threads = 1;
  std::int64_t runs = 20;
  double fp32_tolerance = 1e-4;
  double fp16_tolerance = 2e-2;
  std::int64_t seed = 0;
  std::string python = ".venv-parity/bin/python";
  std::string script = "scripts/gan_parity.py";
  std::string output = "generator";

  template <class V>
  void fields(V& v) {
    v("generator", generator, "the generator file (e2gan_base, or e2gan_concept scratch/full)", Input::File);
    v("edit", edit, "an edit file of this generator (e2gan_concept lora) folded in (empty: none)", Input::File);
    v("edit_name", edit_name, "without an edit file: the row of the generator's edit table (empty: the last)");
    v("size", size, "export input size: [1, 3, size, size] (a multiple of 8)", Range{8, 8192});
    v("formats", formats, "onnx and/or ncnn", Choices({"onnx", "ncnn"}));
    v("precisions", precisions, "fp32 and/or fp16 (float16 weights, float32 activations)", Choices({"fp32", "fp16"}));
    v("parity", parity, "run the parity check (onnx.checker, onnxruntime, ncnn) and latency measurement");
    v("samples", samples, "parity inputs of each kind (random, Shapes images)", Range{1, 64});
    v("threads", threads, "runtime threads of the latency measurement", Range{1, 256});
    v("runs", runs, "timed runs per runtime and precision (the median is reported)", Range{1, 10000});
    v("fp32_tolerance", fp32_tolerance, "max abs error allowed for float32 weights", Range{0, 1});
    v("fp16_tolerance", fp16_tolerance, "max abs error allowed for float16 weights", Range{0, 1});
    v("seed", seed, "seed of the random parity inputs and Shapes scenes", Range{0, 9e15});
    v("python", python, "Python of the parity venv (scripts/parity_venv.sh)");
    v("script", script, "the parity script");
    v("output", output, "stem of the exported files in the run folder (<stem>.onnx, <stem>.fp16.param, ...)");
  }
};

void export_gan_job(const ExportGanConfig& config, JobContext& ctx);

}  // namespace atelier
