// DiT model files: the DiT weights (official key layout) plus how to run them, in one safetensors file
// whose metadata holds the DiT config, the noise schedule, the prediction target, the class names and
// the Shapes data it was trained on. Written by train_base, the adapter jobs (fold) and merge; read by
// everything that samples. Official DiT checkpoints (.pt, diffusers) load through load_generator_model.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "diffusion/dit.h"

namespace atelier {

struct DiTModelInfo {
  DiTConfig dit;
  std::string schedule = "linear";
  std::string prediction = "eps";
  std::int64_t num_train_timesteps = 1000;
  std::vector<std::string> class_names;
  json data;  // ShapesData of the training set, or the path of its image folder (a string: not Shapes)
};

void save_dit_model(const std::filesystem::path& path, DiT& model, const DiTModelInfo& info, const json& config);
// Loads an Atelier DiT model file (Error naming the file and the missing metadata for any other file).
DiT load_dit_model(const std::filesystem::path& path, DiTModelInfo* info = nullptr);

// A DiT to sample from: an Atelier model file, or any DiT checkpoint load_dit reads (the official .pt
// files, diffusers weights), which runs as the official code does: linear schedule, eps prediction,
// 1000 timesteps, classes named by index ("0" ... "999"). Returns the model on the CPU in eval mode.
DiT load_generator_model(const std::filesystem::path& path, DiTModelInfo* info);

// The model's label of each class name (its class_names); FieldError naming `field` and listing the
// model's classes for a name it does not know.
std::vector<std::int64_t> class_labels(const DiTModelInfo& info, const std::vector<std::string>& names,
                                       const std::string& field);

}  // namespace atelier
