// Zip central directory of torch.save archives: stored (uncompressed) members, ZIP64 aware.
// Torch-free (fuzzed by tests/fuzz/fuzz_zip_directory.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace atelier {

// Stored (uncompressed) zip members, as torch.save writes them. Torch-free (fuzzed).
struct ZipEntry {
  std::string name;
  std::uint64_t offset = 0;  // of the member's data in the archive
  std::uint64_t size = 0;
};
// Throws Error for a bad/truncated directory, compressed or encrypted members, or data past EOF.
std::vector<ZipEntry> read_zip_directory(std::string_view archive);

}  // namespace atelier
