// Torch-free part of the safetensors format: dtypes and header parsing/validation (fuzzed on its own).
// Ref: huggingface/safetensors safetensors/src/tensor.rs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace atelier::safetensors {

enum class DType { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

std::string_view dtype_name(DType d);
std::size_t dtype_bits(DType d);

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // offsets relative to the start of the byte buffer
  std::uint64_t end = 0;
};

struct Header {
  std::vector<Entry> entries;                   // in file order (by begin offset)
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::uint64_t data_start = 0;                 // 8 + header length
};

// Torch-free: validates the 8-byte length, the JSON header and the offsets against the file's bytes.
// Throws Error describing the first problem found.
Header parse(std::string_view file_bytes);

// By-hand float8 decoders (used when LibTorch lacks the dtype; exposed for tests).
float decode_f8_e4m3(std::uint8_t v);
float decode_f8_e5m2(std::uint8_t v);

}  // namespace atelier::safetensors
