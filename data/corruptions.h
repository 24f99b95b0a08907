// Shapes-C: the 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) at severities 1..5, with
// the CIFAR-10-C parameters (tuned for 32x32 images; pixel-sized parameters are not rescaled for larger
// images, except elastic_transform's, which the reference states relative to the image size). Torch-free.
//
//   noise    gaussian_noise, shot_noise, impulse_noise
//   blur     defocus_blur, glass_blur, motion_blur, zoom_blur
//   weather  snow, frost, fog, brightness
//   digital  contrast, elastic_transform, pixelate, jpeg_compression
//
//   Image c = corrupt(image, "fog", 3, corruption_seed(data_seed, index));
//
// A corruption is a pure function of (image, name, severity, seed): its random draws (noise, angles,
// fractals, displacement fields) come from a generator seeded by `seed` alone, in the same order at every
// severity, so a severity sweep with one seed scales the same draws. Results are clipped to [0, 255] and
// rounded. docs/corruptions.md lists every parameter.
//
// Departure: frost blends the image with photographs of frost in the reference; we have none, so it
// blends with a procedural frost texture (a smooth plasma haze plus thin bright ridges of a rough plasma,
// tinted pale blue) drawn from the seed, with the reference's weights (image * a + frost * b).
//
// Ref: hendrycks/robustness@ca360085d57889288c4143fddd8a707bbcae01bd ImageNet-C/create_c/make_cifar_c.py
// (parameters; the implementation is our own, on OpenCV).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/pixels.h"

namespace atelier {

// The 15 corruption names, in ImageNet-C order.
const std::vector<std::string>& corruption_names();

// `image` (8-bit RGB) corrupted by `name` at `severity` (1..5): an RGB image of the same size. Throws
// Error listing the names for an unknown name, naming the value for a severity outside 1..5, and for an
// image that is not 3-channel.
Image corrupt(const Image& image, const std::string& name, int severity, std::uint64_t seed);

// Throws the Error corrupt() throws for `name` and `severity`, without corrupting anything.
void check_corruption(const std::string& name, int severity);

// The seed of image `index` of a corrupted dataset drawn with `seed` (Shapes-C folders use the Shapes
// data seed), so a client can reproduce any image of a written folder.
std::uint64_t corruption_seed(std::uint64_t seed, std::int64_t index);

}  // namespace atelier
