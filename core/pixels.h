// Torch-free image pixels, shared by the engine (core/image.h) and the GUI.
#pragma once
#include <cstdint>
#include <vector>

namespace atelier {

// 8-bit interleaved pixels, row-major: [height, width, channels].
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;
};

}  // namespace atelier
