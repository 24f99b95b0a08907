// Metrics that need no downloads (protocols in docs/metrics.md). All take images [N, 3, H, W] in [-1, 1].
#pragma once
#include <torch/torch.h>

#include <vector>

#include "core/rng.h"
#include "eval/probe.h"

namespace atelier {

// Pooled probe features [N, F], computed in batches without gradients.
torch::Tensor probe_features(ProbeNet& probe, const torch::Tensor& images);
// Probe label predictions [N] (0-7 Shapes classes, 8-12 glyphs).
torch::Tensor probe_predict(ProbeNet& probe, const torch::Tensor& images);

// Frechet distance between Gaussians fitted to two feature sets [N, F] (float64 math):
//   |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)
double frechet_distance(const torch::Tensor& features_a, const torch::Tensor& features_b);
// FD-shapes: Frechet distance on probe features of generated vs reference images.
double fd_shapes(ProbeNet& probe, const torch::Tensor& generated, const torch::Tensor& reference);
// Sharpness: mean over images of the variance of the Laplacian of the grey image (pixel range 0-255).
double sharpness(const torch::Tensor& images);
// Patch texture: energy of differences between neighbouring pixels that straddle a patch boundary (every
// `patch` pixels, both directions) over the energy of those inside patches, pooled over the set. Images
// whose content ignores the patch grid score ~1; a generator that draws each patch apart scores higher.
double patch_texture(const torch::Tensor& images, std::int64_t patch);
// Fraction of images the probe labels as `labels` (in the probe's 13-way label space).
double probe_accuracy(ProbeNet& probe, const torch::Tensor& images, const torch::Tensor& labels);
// Mean cosine similarity of probe features of `images` to the mean feature of `reference`.
double feature_cosine(ProbeNet& probe, const torch::Tensor& images, const torch::Tensor& reference);

// PSNR in dB between images in [-1, 1] (peak-to-peak 2), averaged over images.
double psnr(const torch::Tensor& a, const torch::Tensor& b);

// Representative subset (E2GAN's selection of training concepts and inputs): k-means on `features`
// [N, D] (k-means++ seeding drawn from `rng`, then Lloyd iterations until no assignment changes or
// `iterations`), and for each cluster the index of the sample nearest its centre. Returns min(k, N)
// distinct indices, ascending.
std::vector<std::int64_t> kmeans_representatives(const torch::Tensor& features, std::int64_t k, Rng& rng,
                                                 int iterations = 100);

}  // namespace atelier
