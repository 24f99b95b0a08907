// Torch-free part of the safetensors reader: header parsing and validation (fuzzed on its own).
// Ref: huggingface/safetensors safetensors/src/tensor.rs (Metadata::validate, read_metadata).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/safetensors_format.h"

namespace atelier::safetensors {
namespace {

constexpr std::uint64_t kMaxHeader = 100'000'000;

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::size_t bits;
};
constexpr std::array<DTypeInfo, 15> kDTypes{{
    {DType::BOOL, "BOOL", 8},
    {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},
    {DType::F8_E5M2, "F8_E5M2", 8},
    {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::I16, "I16", 16},
    {DType::U16, "U16", 16},
    {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},
    {DType::I32, "I32", 32},
    {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},
    {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},
    {DType::F64, "F64", 64},
}};

DType parse_dtype(const std::string& s, const std::string& tensor) {
  for (const auto& d : kDTypes)
    if (d.name == s) return d.dtype;
  fail("tensor '", tensor, "': unsupported dtype '", s, "'");
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra;
    std::uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c >> 5) == 0x6) {
      extra = 1, cp = c & 0x1F;
    } else if ((c >> 4) == 0xE) {
      extra = 2, cp = c & 0x0F;
    } else if ((c >> 3) == 0x1E) {
      extra = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (extra >= s.size() - i) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr std::uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const std::string& tensor) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) fail("tensor '", tensor, "': shape size overflows");
  return a * b;
}

Entry parse_entry(const std::string& name, const nlohmann::json& v) {
  if (!v.is_object()) fail("tensor '", name, "': entry is not an object");
  for (const auto& [key, _] : v.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail("tensor '", name, "': unknown field '", key, "'");
  Entry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail("tensor '", name, "': missing or non-string 'dtype'");
  e.dtype = parse_dtype(dt->get<std::string>(), name);
  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) fail("tensor '", name, "': missing or non-array 'shape'");
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned() || d.get<std::uint64_t>() > std::numeric_limits<std::int64_t>::max())
      fail("tensor '", name, "': shape entries must be non-negative integers");
    e.shape.push_back(d.get<std::int64_t>());
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail("tensor '", name, "': 'data_offsets' must be two non-negative integers");
  e.begin = (*off)[0].get<std::uint64_t>();
  e.end = (*off)[1].get<std::uint64_t>();
  return e;
}

}  // namespace

std::string_view dtype_name(DType d) {
  return kDTypes[static_cast<std::size_t>(d)].name;
}
std::size_t dtype_bits(DType d) {
  return kDTypes[static_cast<std::size_t>(d)].bits;
}

Header parse(std::string_view bytes) {
  if (bytes.size() < 8) fail("file too small for a safetensors header (", bytes.size(), " bytes)");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);  // little-endian host
  if (n > kMaxHeader) fail("header length ", n, " exceeds the 100 MB limit");
  if (n > bytes.size() - 8) fail("header length ", n, " runs past the end of the file (", bytes.size(), " bytes)");
  std::string_view text = bytes.substr(8, n);
  if (!valid_utf8(text)) fail("header is not valid UTF-8");
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail("header is not valid JSON");
  if (!j.is_object()) fail("header JSON is not an object");

  Header h;
  h.data_start = 8 + n;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail("'__metadata__' is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail("'__metadata__' value of '", mk, "' is not a string");
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(key, value));
  }
  std::sort(h.entries.begin(), h.entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t expected = 0;
  for (const auto& e : h.entries) {
    if (e.begin != expected)
      fail("tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] ",
           e.begin > expected ? "leave a gap" : "overlap", " (expected to start at ", expected, ")");
    if (e.end < e.begin) fail("tensor '", e.name, "': data_offsets end ", e.end, " < begin ", e.begin);
    std::uint64_t numel = 1;
    for (auto d : e.shape) numel = checked_mul(numel, static_cast<std::uint64_t>(d), e.name);
    std::uint64_t nbits = checked_mul(numel, dtype_bits(e.dtype), e.name);
    if (nbits % 8 != 0) fail("tensor '", e.name, "': size is not a whole number of bytes");
    if (nbits / 8 != e.end - e.begin)
      fail("tensor '", e.name, "': ", dtype_name(e.dtype), " shape needs ", nbits / 8, " bytes but data_offsets span ",
           e.end - e.begin);
    expected = e.end;
  }
  std::uint64_t data_size = bytes.size() - h.data_start;
  if (expected != data_size)
    fail("tensor data ends at byte ", expected, " of a ", data_size, "-byte buffer (",
         expected < data_size ? "trailing bytes" : "truncated file", ")");
  return h;
}

float decode_f8_e4m3(std::uint8_t v) {
  // float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa; no infinities, 0x7F/0xFF are NaN.
  int sign = v >> 7, exp = (v >> 3) & 0xF, man = v & 0x7;
  float out;
  if (exp == 0xF && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0)
    out = std::ldexp(static_cast<float>(man) / 8.0f, -6);
  else
    out = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
  return sign ? -out : out;
}

float decode_f8_e5m2(std::uint8_t v) {
  // float8_e5m2: 1 sign, 5 exponent (bias 15), 2 mantissa; IEEE-like infinities and NaNs.
  int sign = v >> 7, exp = (v >> 2) & 0x1F, man = v & 0x3;
  float out;
  if (exp == 0x1F)
    out = man == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0)
    out = std::ldexp(static_cast<float>(man) / 4.0f, -14);
  else
    out = std::ldexp(1.0f + static_cast<float>(man) / 4.0f, exp - 15);
  return sign ? -out : out;
}

}  // namespace atelier::safetensors
