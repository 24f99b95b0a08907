// Model and adapter operations that both clients call: the CLI's `fold`, `convert-lora` and
// `inspect --base`, the studio's Models panel, and the input check every job gets before it starts.
// Torch-free header (the GUI's panels include it); the functions load tensors and belong on a worker
// thread in the GUI.
#pragma once
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"

namespace atelier {

struct JobKind;
struct PreparedRun;

// Folds adapters (Atelier adapter files of any method, PEFT or kohya LoRA files) into their base model
// and writes one standalone DiT model file. Returns the folded model's class count.
std::size_t fold_to_file(const std::filesystem::path& base, const std::vector<std::string>& adapters,
                         const std::vector<double>& weights, const std::filesystem::path& out);

struct LoRAConversion {
  std::string from_dialect;
  std::string from_names;  // "model" or "diffusers" (a DiT's layers as diffusers names them)
  std::size_t layers = 0;  // of the model
};
// Rewrites a LoRA file (any dialect) in `dialect` (atelier, peft, kohya) for base model `base`, with the
// layer names `names` ("model", "diffusers": a DiT's diffusers names; "": as the input file); refuses
// files that do not fit the base, naming every unmatched or mismatched layer.
LoRAConversion convert_lora_file(const std::filesystem::path& in, const std::filesystem::path& out,
                                 const std::string& dialect, const std::filesystem::path& base,
                                 const std::string& names = "");

// The compatibility of a LoRA or adapter file with base model `base`: as JSON (file, base, dialect,
// matched, unmatched, mismatched) and as the text the studio and `atelier inspect --base` show.
json lora_compatibility(const std::filesystem::path& file, const std::filesystem::path& base);
std::string compatibility_report(const std::filesystem::path& file, const std::filesystem::path& base);

// Checks a prepared job's inputs before it runs, from the fields its config marks as inputs
// (core/config.h Input): files exist, image folders hold images, and every Atelier adapter was trained
// on the job's model. Throws FieldError naming the field and the file. The job runner calls it before
// the run folder is touched, so the CLI and the studio refuse the same jobs the same way.
void check_job_inputs(const JobKind& kind, const json& effective);

}  // namespace atelier
