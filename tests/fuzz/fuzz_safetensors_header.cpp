// libFuzzer target: safetensors header parsing and validation (core/safetensors_header.cpp). Any input
// must either parse into a header whose tensors tile the data buffer exactly, or throw atelier::Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "core/safetensors_format.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace st = atelier::safetensors;
  try {
    st::Header h = st::parse({reinterpret_cast<const char*>(data), size});
    std::uint64_t next = 0;
    for (const st::Entry& e : h.entries) {
      if (e.begin != next || e.end < e.begin) __builtin_trap();
      std::uint64_t numel = 1;
      for (std::int64_t d : e.shape) numel *= static_cast<std::uint64_t>(d);  // validated: no overflow
      if (numel * st::dtype_bits(e.dtype) / 8 != e.end - e.begin) __builtin_trap();
      next = e.end;
    }
    if (h.data_start + next != size) __builtin_trap();
  } catch (const atelier::Error&) {
  }
  if (size > 0) {
    (void)st::decode_f8_e4m3(data[0]);
    (void)st::decode_f8_e5m2(data[0]);
  }
  return 0;
}
