// Training on a Stable Diffusion base (diffusion/stable_diffusion.h) from a folder of captioned images
// (kohya's convention: <image>.txt beside each image; an image without one is captioned with the subject's
// name), and applying what it wrote back to such a base.
//
// Each image is encoded once: VAE latents (the posterior's mean, scaled) at the model's size and the
// caption's text embeddings (frozen encoder). A step draws a batch of positions from seeded epochs
// (data/training_images.h), timesteps and noise from the job's Rng, and minimises the MSE of the UNet's
// prediction (eps, or v for v-prediction models), so a resumed run continues exactly. Grids of the first
// captions before and after training (before.png, after.png) are written.
//
//   lora / ortho_lora  a LoRA on the UNet's attention projections (attached through the UNet's hooks),
//                      written as a kohya file (lora_unet_*, .alpha) that sample, merge, inspect and other
//                      SD tools load.
//   difffit / bitfit   every bias of the UNet and, for DiffFit, a per-channel scale gamma (ones at start) on
//                      the residual branches (attn1, attn2, ff) of the chosen transformer blocks, in
//                      forward order (down, mid, up: "first_half" is the encoder side); written as an
//                      Atelier adapter file (tensors unet.<path>, the EMA values) checked against the
//                      UNet's hash when applied.
#pragma once
#include <string>
#include <vector>

#include "adapters/concept.h"
#include "adapters/finetune.h"
#include "core/job.h"

namespace atelier {

struct StableDiffusionModel;

// `ortho`: orthogonal adaptation (ortho_lora): the down-projections are the concept's columns
// (ortho_slot * rank ...) of the shared orthogonal basis of `ortho_seed`, frozen; only the ups train, so
// concepts trained in different slots merge by summation without interfering.
void sd_lora_job(const ConceptConfig& config, JobContext& ctx, bool ortho = false);

// The `difffit` job on a Stable Diffusion base: method difffit or bitfit.
void sd_difffit_job(const FineTuneConfig& config, JobContext& ctx);

// Applies adapters to a loaded model in order, each at its weight w (empty `weights`: 1):
//   - Atelier difffit/bitfit adapter files, refused (naming the file) unless trained on this UNet: biases
//     become base + w (trained - base); gammas 1 + w (gamma - 1) fold into the output layer of their branch
//     (to_out.0, ff.net.2), exactly;
//   - LoRA files (PEFT, kohya, diffusers) merged into the weights (adapters/lora_files.h).
// Errors name the field 'adapters' and the file.
void apply_sd_adapters(StableDiffusionModel& sd, const std::vector<std::string>& files,
                       const std::vector<double>& weights);

}  // namespace atelier
