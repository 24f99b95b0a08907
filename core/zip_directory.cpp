// Zip directory of torch.save archives (stored members only). Torch-free so it is fuzzed on its own.
#include "core/zip_directory.h"

#include <cstdint>
#include <optional>

#include "core/error.h"

namespace atelier {
namespace {

constexpr std::uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr std::uint32_t kEocd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr std::uint32_t kFull32 = 0xFFFFFFFFu;

// Bounds-checked little-endian reads.
struct Bytes {
  std::string_view a;
  bool fits(std::uint64_t off, std::uint64_t n) const { return off <= a.size() && n <= a.size() - off; }
  std::uint64_t get(std::uint64_t off, int n) const {
    if (!fits(off, n)) fail("zip: truncated record at byte ", off);
    std::uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<std::uint8_t>(a[off + k]);
    return v;
  }
  std::uint64_t u16(std::uint64_t off) const { return get(off, 2); }
  std::uint64_t u32(std::uint64_t off) const { return get(off, 4); }
  std::uint64_t u64(std::uint64_t off) const { return get(off, 8); }
};

}  // namespace

std::vector<ZipEntry> read_zip_directory(std::string_view archive) {
  const Bytes b{archive};
  const std::uint64_t size = archive.size();
  if (size < 22) fail("not a zip archive (", size, " bytes)");

  // End of central directory: 22 bytes + a comment of up to 64 KiB, at the end of the file.
  std::optional<std::uint64_t> eocd;
  const std::uint64_t lowest = size > 22 + 0xFFFF ? size - 22 - 0xFFFF : 0;
  for (std::uint64_t p = size - 22 + 1; p-- > lowest;) {
    if (b.u32(p) == kEocdSig && p + 22 + b.u16(p + 20) <= size) {
      eocd = p;
      break;
    }
  }
  if (!eocd) fail("zip end-of-central-directory record not found (not a zip archive, or truncated)");
  std::uint64_t count = b.u16(*eocd + 10), dir_size = b.u32(*eocd + 12), dir_offset = b.u32(*eocd + 16);
  if (*eocd >= 20 && b.u32(*eocd - 20) == kLocator64Sig) {
    std::uint64_t rec = b.u64(*eocd - 20 + 8);
    if (!b.fits(rec, 56) || b.u32(rec) != kEocd64Sig)
      fail("zip64 end-of-central-directory record missing at byte ", rec);
    count = b.u64(rec + 32);
    dir_size = b.u64(rec + 40);
    dir_offset = b.u64(rec + 48);
  }
  if (!b.fits(dir_offset, dir_size))
    fail("zip central directory (", dir_size, " bytes at ", dir_offset, ") runs past the end of the file (", size,
         " bytes)");
  if (count > dir_size / 46) fail("zip central directory claims ", count, " entries but has room for ", dir_size / 46);

  std::vector<ZipEntry> entries;
  entries.reserve(count);
  const std::uint64_t end = dir_offset + dir_size;
  std::uint64_t p = dir_offset;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (p + 46 > end || b.u32(p) != kCentralSig) fail("zip central directory entry ", i, " at byte ", p, " is corrupt");
    const std::uint64_t flags = b.u16(p + 8), method = b.u16(p + 10), name_len = b.u16(p + 28),
                        extra_len = b.u16(p + 30), comment_len = b.u16(p + 32);
    std::uint64_t csize = b.u32(p + 20), usize = b.u32(p + 24), local = b.u32(p + 42);
    if (p + 46 + name_len + extra_len + comment_len > end) fail("zip central directory entry ", i, " is truncated");
    std::string name(archive.substr(p + 46, name_len));

    // ZIP64 extended information: 8-byte values for exactly the fields saturated at 0xFFFFFFFF.
    for (std::uint64_t q = p + 46 + name_len, q_end = q + extra_len; q + 4 <= q_end;) {
      const std::uint64_t id = b.u16(q), len = b.u16(q + 2);
      if (q + 4 + len > q_end) fail("zip member ", name, ": truncated extra field");
      if (id == 1) {
        std::uint64_t r = q + 4;
        for (std::uint64_t* field : {&usize, &csize, &local}) {
          if (*field != kFull32) continue;
          if (r + 8 > q + 4 + len) fail("zip member ", name, ": truncated zip64 extra field");
          *field = b.u64(r);
          r += 8;
        }
      }
      q += 4 + len;
    }
    if (flags & 1) fail("encrypted member ", name);
    if (method != 0) fail("compressed member ", name, ": torch.save archives are stored uncompressed");
    if (csize != usize) fail("zip member ", name, ": stored size ", csize, " differs from its size ", usize);
    if (!b.fits(local, 30) || b.u32(local) != kLocalSig) fail("zip member ", name, ": no local header at byte ", local);
    const std::uint64_t data = local + 30 + b.u16(local + 26) + b.u16(local + 28);
    if (!b.fits(data, usize))
      fail("zip member ", name, ": data (", usize, " bytes at ", data, ") runs past the end of the file (", size,
           " bytes)");
    entries.push_back({std::move(name), data, usize});
    p += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

}  // namespace atelier
