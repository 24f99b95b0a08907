// The `lora` and `ortho_lora` jobs on a Stable Diffusion base (diffusion/stable_diffusion.h): a LoRA on the UNet
// trained on a folder of captioned images (kohya's convention: <image>.txt beside each image; an image without one is
// captioned with the concept's name), written as a kohya file (lora_unet_*, .alpha) that sample, merge,
// inspect and other SD tools load.
//
// Each image is encoded once: VAE latents (the posterior's mean, scaled) at the model's size and the
// caption's text embeddings (frozen encoder). A step draws a batch of positions from seeded epochs
// (data/training_images.h), timesteps and noise from the job's Rng, and minimises the MSE of the UNet's
// prediction (eps, or v for v-prediction models) with the LoRA attached through the UNet's hooks, so a
// resumed run continues exactly. Grids of the first captions before and after training (before.png,
// after.png) are written.
#pragma once
#include "adapters/concept.h"
#include "core/job.h"

namespace atelier {

// `ortho`: orthogonal adaptation (ortho_lora): the down-projections are the concept's columns
// (ortho_slot * rank ...) of the shared orthogonal basis of `ortho_seed`, frozen; only the ups train, so
// concepts trained in different slots merge by summation without interfering.
void sd_lora_job(const ConceptConfig& config, JobContext& ctx, bool ortho = false);

}  // namespace atelier
