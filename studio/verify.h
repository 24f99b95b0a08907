// `atelier verify MODEL REFERENCE.safetensors`: runs a model on the inputs stored in a reference file and
// compares with the outputs stored there, so a user can check a converted or downloaded checkpoint
// against outputs produced by another implementation (e.g. diffusers, or the official DiT code).
//
// Reference layouts (tensor names), optional "config" metadata (JSON: num_heads, input_size for DiT;
// VAEConfig fields such as norm_num_groups for the VAE):
//   DiT   latents [N, C, H, W], timesteps [N], labels [N] -> sample [N, C', H, W]
//   VAE   image [N, 3, H, W] -> mean, logvar          and/or   latent [N, 4, h, w] -> decoded
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace atelier {

struct VerifyCheck {
  std::string name;    // e.g. "dit sample", "vae mean"
  double max_abs = 0;  // max |model - reference|
  double scale = 1;    // max(1, max |reference|)
  bool passed = false;
};

struct VerifyReport {
  std::vector<VerifyCheck> checks;
  std::vector<std::string> warnings;  // the loader's (e.g. diffusers DiT blocks whose embedder copies differ)
};

// Throws Error if the reference file matches no known layout or the model cannot be loaded.
VerifyReport verify_model(const std::filesystem::path& model, const std::filesystem::path& reference, double tolerance);

}  // namespace atelier
