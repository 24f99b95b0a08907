// LoRA files in the dialects other tools use, through one key-map table per dialect:
//
//   dialect  tensor names                                          scale = alpha / rank from
//   atelier  <path>.lora_A.weight, .lora_B.weight, .alpha          the .alpha scalars (Atelier adapter file)
//   peft     base_model.model.<path>.lora_A.weight, .lora_B.weight adapter_config.json beside the file:
//                                                                  lora_alpha, r, use_rslora (alpha/sqrt r),
//                                                                  rank_pattern / alpha_pattern; none: 1
//   kohya    lora_unet_<path with . as _>.lora_down.weight,        the .alpha scalars (missing: rank)
//            .lora_up.weight, .alpha
//
// <path> is the layer's module path in the model (blocks.0.attn.qkv). Kohya names lose the dots, so
// they are resolved against the model's layer paths. PEFT files saved by diffusers' pipelines may carry
// "transformer." or "unet." instead of "base_model.model."; both are accepted, and kohya names without
// "lora_unet_" (or with "transformer_"), as diffusers' convert_state_dict_to_kohya writes them for a
// transformer, are too.
//
// A DiT's layers may also carry diffusers DiTTransformer2DModel names (transformer_blocks.N.attn1.to_q,
// ff.net.0.proj, proj_out_2, ...; diffusion/dit_keys.h). Separate to_q / to_k / to_v LoRAs land on the
// fused attn.qkv as one LoRA whose rank is the sum of theirs: down = [down_q; down_k; down_v] and up is
// block-diagonal, each block scaled by its own alpha / rank (so the file's alpha is the summed rank,
// scale 1), which is exactly the merged q/k/v update; a missing part is a zero block. Written back with
// diffusers names, a qkv LoRA splits exactly into three (the same down, up's row blocks).
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"

namespace atelier {

enum class LoRADialect { Atelier, PEFT, Kohya };
const char* lora_dialect_name(LoRADialect d);
LoRADialect lora_dialect_by_name(const std::string& name);  // Error listing the choices

struct LoRALayerWeights {
  torch::Tensor down, up;  // [r, in] / [out, r] (conv: [r, in, kh, kw] / [out, r, 1, 1])
  double alpha = 0;        // scale = alpha / r
};

struct LoRAWeights {
  LoRADialect dialect = LoRADialect::Atelier;
  std::map<std::string, LoRALayerWeights> layers;  // by the model's layer path
  std::vector<std::string> unresolved;             // file keys naming no layer of the model (kohya)
  AdapterInfo atelier;                             // Atelier files: their metadata
  bool diffusers_names = false;                    // the file named a DiT's layers as diffusers does
};

// Reads a LoRA file of any dialect (detected by its names and metadata). `layer_paths` are the target
// model's Linear/Conv2d paths (lora_layer_paths), used to resolve kohya names.
LoRAWeights read_lora_file(const std::filesystem::path& path, const std::vector<std::string>& layer_paths);

// Writes `lora` in `dialect` (PEFT: also adapter_config.json beside the file; Atelier: an adapter file
// with `info`, whose base_hash must be set), with diffusers DiT layer names when lora.diffusers_names.
void write_lora_file(const std::filesystem::path& path, const LoRAWeights& lora, LoRADialect dialect,
                     const AdapterInfo& info = {});

// The Linear/Conv2d layer paths of a model.
std::vector<std::string> lora_layer_paths(torch::nn::Module& model);

// How a LoRA file fits a model: layers found with matching shapes, file layers the model lacks, and
// layers whose shapes disagree (with both shapes).
struct LoRACompatibility {
  std::vector<std::string> matched, unmatched, mismatched;
  bool ok() const { return unmatched.empty() && mismatched.empty(); }
};
LoRACompatibility check_lora(const LoRAWeights& lora, torch::nn::Module& model);

// A LoRA (detached from any hooks) holding the file's layers for `model`; Error naming `source` and
// listing every unmatched or mismatched layer when the file does not fit.
LoRA to_lora(const LoRAWeights& lora, torch::nn::Module& model, const std::string& source);
// The file form of a LoRA.
LoRAWeights from_lora(const LoRA& lora);

// Merges LoRA files of any dialect into `model`'s weights, file k at weights[k] (empty: 1 each): for
// models without an Atelier base hash (Stable Diffusion), matched layer by layer. Error naming the file
// and listing every layer that does not fit.
void merge_lora_files(torch::nn::Module& model, const std::vector<std::string>& files,
                      const std::vector<double>& weights);

}  // namespace atelier
