// libFuzzer target: the restricted unpickler (core/pickle.cpp) with the default limits checkpoints are
// loaded with. Persistent ids resolve to themselves, so BINPERSID paths are exercised too.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "core/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace pk = atelier::pickle;
  pk::Hooks hooks;
  hooks.persistent_load = [](const pk::ValuePtr& pid) { return pid; };
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    pk::ValuePtr root = pk::unpickle(bytes, hooks);
    if (root) (void)root->repr();
  } catch (const atelier::Error&) {
  }
  try {
    (void)pk::unpickle(bytes);  // no hooks: persistent ids are errors
  } catch (const atelier::Error&) {
  }
  return 0;
}
