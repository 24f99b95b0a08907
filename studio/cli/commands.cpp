#include "studio/cli/commands.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "adapters/finetune.h"
#include "adapters/lora_files.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "core/torch_zip.h"
#include "core/training_state.h"
#include "diffusion/generate.h"
#include "studio/runner.h"
#include "studio/verify.h"
#include "studio/workspace.h"

namespace atelier::cli {

int run_job(const RunArgs& args, const CancelToken& cancel) {
  RunRequest request = load_job_file(args.job_file);
  request.overrides = args.overrides;
  request.resume = args.resume;
  request.run_dir = args.run_dir;
  JobRunner runner;
  PreparedRun prepared = runner.prepare(request);
  Reporter reporter;
  reporter.add_sink(std::make_shared<TtySink>(stderr, args.quiet));
  RunResult result = runner.run(prepared, reporter, cancel);
  switch (result.status) {
    case RunResult::Status::Completed: return 0;
    case RunResult::Status::Cancelled: return 130;
    case RunResult::Status::Failed: return 1;
  }
  return 1;
}

int list_jobs(const std::string& kind, bool as_json) {
  const auto& reg = JobRegistry::builtin();
  json all = json::array();
  for (const auto& k : reg.kinds()) {
    if (!kind.empty() && k.name != kind) continue;
    json fields = json::array();
    for (const auto& f : k.fields) {
      json fj = {{"name", f.name}, {"type", f.type}, {"default", f.default_value}, {"help", f.help}};
      if (f.range) fj["range"] = {f.range->min, f.range->max};
      if (!f.choices.empty()) fj["choices"] = f.choices;
      fields.push_back(fj);
    }
    all.push_back({{"kind", k.name}, {"help", k.help}, {"fields", fields}});
  }
  if (!kind.empty() && all.empty()) reg.get(kind);  // throws, listing the known kinds
  if (as_json) {
    std::cout << all.dump(2) << "\n";
    return 0;
  }
  for (const auto& k : all) {
    std::cout << k["kind"].get<std::string>() << ": " << k["help"].get<std::string>() << "\n";
    for (const auto& f : k["fields"]) {
      std::string extra;
      if (f.contains("range")) extra = " in [" + f["range"][0].dump() + ", " + f["range"][1].dump() + "]";
      if (f.contains("choices")) extra = " one of " + f["choices"].dump();
      std::printf("  %-18s %-12s = %-14s %s%s\n", f["name"].get<std::string>().c_str(),
                  f["type"].get<std::string>().c_str(), f["default"].dump().c_str(),
                  f["help"].get<std::string>().c_str(), extra.c_str());
    }
    std::cout << "\n";
  }
  return 0;
}

namespace {
std::string shape_string(const torch::Tensor& t) {
  std::string s = "[";
  for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

void print_tensors(const TensorFile& file, std::int64_t& total) {
  for (const auto& [name, t] : file.tensors) {
    std::printf("  %-56s %-10s %s\n", name.c_str(), std::string(c10::toString(t.scalar_type())).c_str(),
                shape_string(t).c_str());
    total += t.numel();
  }
}
}  // namespace

int inspect(const std::string& file, bool as_json) {
  FileFormat format = detect_format(file);
  json out = {{"file", file}, {"format", format_name(format)}};
  if (format == FileFormat::Png || format == FileFormat::Jpeg) {
    Image img = load_image(file, 0);
    out["width"] = img.width;
    out["height"] = img.height;
    out["channels"] = img.channels;
    if (format == FileFormat::Png) out["text"] = read_png_text(file);
    std::cout << out.dump(2) << "\n";  // images: the same JSON either way
    return 0;
  }
  if (format == FileFormat::Unknown) fail(file, ": not a safetensors file, torch checkpoint or image");
  TensorFile tf = load_tensor_file(file);
  std::int64_t total = 0;
  if (as_json) {
    json tensors = json::object();
    for (const auto& [name, t] : tf.tensors) {
      tensors[name] = {{"dtype", std::string(c10::toString(t.scalar_type()))}, {"shape", t.sizes().vec()}};
      total += t.numel();
    }
    out["tensors"] = tensors;
    out["metadata"] = tf.metadata;
    out["parameters"] = total;
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: %s, %zu tensors\n", file.c_str(), format_name(format), tf.tensors.size());
  print_tensors(tf, total);
  std::printf("total elements: %lld\n", static_cast<long long>(total));
  if (!tf.metadata.empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : tf.metadata) {
      std::string shown = v.size() > 200 ? v.substr(0, 200) + "..." : v;
      std::printf("  %s: %s\n", k.c_str(), shown.c_str());
    }
  }
  return 0;
}

int verify(const std::string& model, const std::string& reference, double tolerance) {
  bool ok = true;
  for (const auto& c : verify_model(model, reference, tolerance)) {
    std::printf("%-12s max |diff| %.3g (%.3g of scale %.3g, tolerance %.3g): %s\n", c.name.c_str(), c.max_abs,
                c.max_abs / c.scale, c.scale, tolerance, c.passed ? "ok" : "MISMATCH");
    ok = ok && c.passed;
  }
  std::fflush(stdout);
  if (!ok) std::fprintf(stderr, "atelier: error: %s does not reproduce %s\n", model.c_str(), reference.c_str());
  return ok ? 0 : 1;
}

int convert(const std::string& in, const std::string& out, const std::string& select, const std::string& dtype) {
  TensorFile tf = load_tensor_file(in);
  std::string prefix = select.empty() ? "" : select + ".";
  TensorMap tensors = tensors_under(tf.tensors, prefix);
  if (tensors.empty()) fail(in, ": no tensors under '", select, "'");
  if (!dtype.empty()) {
    static const std::map<std::string, torch::ScalarType> kDTypes = {
        {"f32", torch::kFloat}, {"f16", torch::kHalf}, {"bf16", torch::kBFloat16}};
    auto it = kDTypes.find(dtype);
    if (it == kDTypes.end()) fail("--dtype: '", dtype, "' is not one of f32, f16, bf16");
    for (auto& [_, t] : tensors)
      if (t.is_floating_point()) t = t.to(it->second);
  }
  Metadata meta;
  for (const auto& [k, v] : tf.metadata)
    if (prefix.empty() || k.rfind(prefix, 0) == 0 || k.find('.') == std::string::npos) meta[k] = v;
  meta["atelier.converted_from"] = std::filesystem::path(in).filename().string();
  safetensors::save(out, tensors, meta);
  std::printf("wrote %s (%zu tensors)\n", out.c_str(), tensors.size());
  return 0;
}

int fold(const std::string& base, const std::vector<std::string>& adapters, const std::vector<double>& weights,
         const std::string& out) {
  DiTModelInfo info;
  std::vector<std::pair<LoRA, double>> loras;
  DiT model = load_adapted_model(base, adapters, weights, &info, &loras);
  DiT plain(model->config());
  load_module_tensors(*plain, folded_tensors(model, loras), "", "folded model");
  json config = {{"base", base}, {"adapters", adapters}, {"adapter_weights", weights}};
  save_dit_model(out, plain, info, config);
  std::printf("wrote %s: %s + %zu adapter(s), %zu classes\n", out.c_str(), base.c_str(), adapters.size(),
              info.class_names.size());
  return 0;
}

int lora_report(const std::string& file, const std::string& base, bool as_json) {
  if (!as_json) {
    std::fputs(compatibility_report(file, base).c_str(), stdout);
    return 0;
  }
  DiTModelInfo info;
  DiT model = load_generator_model(base, &info);
  const LoRAWeights lora = read_lora_file(file, lora_layer_paths(*model));
  const LoRACompatibility c = check_lora(lora, *model);
  std::cout << json{{"file", file},
                    {"base", base},
                    {"dialect", lora_dialect_name(lora.dialect)},
                    {"matched", c.matched},
                    {"unmatched", c.unmatched},
                    {"mismatched", c.mismatched}}
                   .dump(2)
            << "\n";
  return 0;
}

int convert_lora(const std::string& in, const std::string& out, const std::string& dialect, const std::string& base) {
  const LoRADialect to = lora_dialect_by_name(dialect);
  DiTModelInfo info;
  DiT model = load_generator_model(base, &info);
  LoRAWeights lora = read_lora_file(in, lora_layer_paths(*model));
  to_lora(lora, *model, in);  // refuses files that do not fit the base
  AdapterInfo a = lora.atelier;
  a.base_hash = model_hash(*model);
  if (a.classes.empty()) a.classes = info.class_names;
  if (a.settings.is_null() || a.settings.empty()) a.settings = {{"input_size", model->config().input_size}};
  write_lora_file(out, lora, to, a);
  std::printf("wrote %s: %s LoRA, %zu layers (from %s)\n", out.c_str(), dialect.c_str(), lora.layers.size(),
              lora_dialect_name(lora.dialect));
  return 0;
}

int write_shapes(const std::string& preset, int count, int size, const std::string& folder) {
  const auto& presets = shapes_presets();
  auto it = std::find_if(presets.begin(), presets.end(), [&](const ShapesPreset& p) { return p.name == preset; });
  if (it == presets.end()) {
    std::string names;
    for (const auto& p : presets) names += "\n  " + p.name + ": " + p.help;
    if (preset == "list") {
      std::printf("Shapes presets:%s\n", names.c_str());
      return 0;
    }
    fail("--preset: unknown preset '", preset, "'; known:", names);
  }
  write_shapes_folder(it->data, size, count, folder);
  std::printf("wrote %d %dx%d images (%s) to %s\n", count, size, size, preset.c_str(), folder.c_str());
  return 0;
}

}  // namespace atelier::cli
