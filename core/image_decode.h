// Decoding image files (PNG, JPEG and BMP through stb_image) into pixels, with the size checked from the
// file's header before any pixel memory is allocated. Torch-free, so it is fuzzed on its own.
#pragma once
#include <string>
#include <string_view>

#include "core/pixels.h"

namespace atelier {

inline constexpr int kMaxImageSide = 16384;
inline constexpr long long kMaxImagePixels = 64LL << 20;  // 8192 x 8192

// Forces `channels` (3 = RGB) unless 0. Throws Error naming `what` for undecodable data or an image
// larger than the limits above.
Image decode_image(std::string_view bytes, const std::string& what, int channels = 3);

}  // namespace atelier
