#include "core/image_decode.h"

#include <stb_image.h>

#include <climits>

#include "core/error.h"

namespace atelier {
namespace {

// stb_image 2.27 (Debian bookworm) does not bound a JPEG Huffman table's symbol count (the counts of one
// DHT table may sum past 256), and then writes past the table: memory corruption from a crafted file.
// Walk the JPEG's marker segments first and refuse any table with more than 256 symbols. A stream this
// walk cannot follow is refused too, rather than handed to the decoder unchecked.
void check_jpeg_huffman_tables(std::string_view b, const std::string& what) {
  auto u8 = [&](std::size_t i) { return static_cast<unsigned char>(b[i]); };
  auto bad = [&](const char* why) { fail(what, ": corrupt JPEG (", why, ")"); };
  // stb reads a JPEG as 0xFF, any further 0xFF fill bytes, then SOI (0xD8).
  std::size_t i = 0;
  if (b.empty() || u8(0) != 0xFF) return;
  while (i < b.size() && u8(i) == 0xFF) ++i;
  if (i >= b.size() || u8(i) != 0xD8) return;
  ++i;
  while (true) {
    while (i < b.size() && u8(i) != 0xFF) ++i;  // stb skips junk between segments too
    while (i < b.size() && u8(i) == 0xFF) ++i;  // fill bytes
    if (i >= b.size()) return;                  // truncated: stb refuses it on its own
    const unsigned m = u8(i++);
    if (m == 0xD9) return;                                             // EOI
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7) || m == 0x00) continue;  // markers without a length
    if (i + 2 > b.size()) return;
    const std::size_t length = (u8(i) << 8) | u8(i + 1);
    if (length < 2 || i + length > b.size()) bad("a segment runs past the end of the file");
    if (m == 0xC4) {  // DHT: tables of [class/id, 16 counts, symbols]
      std::size_t at = i + 2;
      const std::size_t end = i + length;
      while (at < end) {
        if (at + 17 > end) bad("short Huffman table");
        std::size_t symbols = 0;
        for (int k = 1; k <= 16; ++k) symbols += u8(at + k);
        if (symbols > 256) bad("a Huffman table with more than 256 symbols");
        at += 17 + symbols;
      }
      if (at != end) bad("Huffman table length");
    }
    i += length;
    if (m == 0xDA) {  // SOS: entropy-coded data up to the next marker (0xFF 0x00 is a stuffed byte)
      while (i + 1 < b.size() && !(u8(i) == 0xFF && u8(i + 1) != 0x00 && !(u8(i + 1) >= 0xD0 && u8(i + 1) <= 0xD7)))
        ++i;
    }
  }
}

}  // namespace

Image decode_image(std::string_view bytes, const std::string& what, int channels) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX)) fail(what, ": ", bytes.size(), " bytes is too large an image");
  // Only the formats image folders hold reach stb: its other decoders (PNM, PSD, HDR, PIC, GIF, TGA) are
  // where stb 2.27's known overflows live, and nothing here needs them.
  const bool png = bytes.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8);
  const bool bmp = bytes.substr(0, 2) == "BM";
  const bool jpeg = !bytes.empty() && static_cast<unsigned char>(bytes[0]) == 0xFF;
  if (!png && !bmp && !jpeg) fail(what, ": cannot decode image: not a PNG, JPEG or BMP file");
  if (jpeg) check_jpeg_huffman_tables(bytes, what);
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int n = static_cast<int>(bytes.size());
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_memory(data, n, &w, &h, &c)) fail(what, ": cannot decode image: ", stbi_failure_reason());
  if (w > kMaxImageSide || h > kMaxImageSide || static_cast<long long>(w) * h > kMaxImagePixels)
    fail(what, ": ", w, "x", h, " pixels is larger than the limit (", kMaxImageSide, " per side, ", kMaxImagePixels,
         " in all)");
  stbi_uc* pixels = stbi_load_from_memory(data, n, &w, &h, &c, channels);
  if (pixels == nullptr) fail(what, ": cannot decode image: ", stbi_failure_reason());
  Image img;
  img.width = w;
  img.height = h;
  img.channels = channels ? channels : c;
  img.pixels.assign(pixels, pixels + static_cast<std::size_t>(w) * h * img.channels);
  stbi_image_free(pixels);
  return img;
}

}  // namespace atelier
