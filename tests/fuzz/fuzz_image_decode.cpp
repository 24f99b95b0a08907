// libFuzzer target: image decoding (core/image_decode.cpp over stb_image, PNG/JPEG/BMP/GIF/...), with the
// size limits checked from the header before pixels are allocated; RGB and native channel counts.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "core/image_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (int channels : {3, 0}) {
    try {
      const atelier::Image img = atelier::decode_image(bytes, "image", channels);
      if (img.pixels.size() != static_cast<std::size_t>(img.width) * img.height * img.channels) __builtin_trap();
    } catch (const atelier::Error&) {
    }
  }
  return 0;
}
