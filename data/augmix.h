// AugMix (Hendrycks et al., ICLR 2020): an image made of `width` chains of 1-3 random operations, mixed
// with Dirichlet(1) weights, then mixed with the input at a Beta(1, 1) weight. The operations are the
// paper's set that overlaps none of the ImageNet-C corruptions: autocontrast, equalize, posterize,
// solarize, rotate, shear x/y and translate x/y (no contrast, brightness, colour or sharpness), with the
// strengths of the reference at `severity` (1-10; TPT makes its views at 1). Geometric operations fill with
// black, as the reference does. TPT uses AugMix views of random resized crops outside ImageNet
// (distill/tpt.h). Torch-free; deterministic by seed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/pixels.h"

namespace atelier {

struct AugMixSettings {
  int severity = 1;
  int width = 3;  // chains mixed
};

// The AugMix of an RGB image (3 channels), same size. Error on another channel count or bad settings.
Image augmix(const Image& image, const AugMixSettings& settings, std::uint64_t seed);

// The operations' names, in the order a chain draws from.
const std::vector<std::string>& augmix_operations();

// One operation at `level` in (0, severity] (the reference's scale: 10 is the strongest), `sign` +-1 for
// the signed ones: the building block, exposed for tests.
Image augmix_operation(const Image& image, const std::string& name, double level, int sign);

}  // namespace atelier
