// libFuzzer target: the zip central-directory reader used for torch.save checkpoints. Every entry it
// returns must lie inside the archive; anything else must throw atelier::Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#if __has_include("core/zip_directory.h")
#include "core/zip_directory.h"
#else
#include "core/torch_zip.h"
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    for (const atelier::ZipEntry& e : atelier::read_zip_directory({reinterpret_cast<const char*>(data), size}))
      if (e.offset > size || e.size > size - e.offset) __builtin_trap();
  } catch (const atelier::Error&) {
  }
  return 0;
}
