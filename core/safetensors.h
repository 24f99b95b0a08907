// safetensors reader and writer (format: huggingface/safetensors). The reader memory-maps the file and
// applies every validity check of the reference reader; tensors are copied out one at a time (or
// loaded by name), so files larger than half the RAM load without doubling memory.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/safetensors_format.h"
#include "core/tensor_map.h"

namespace atelier {
class MappedFile;
}

namespace atelier::safetensors {

// The torch dtype a safetensors dtype is loaded as. F8 types load natively where LibTorch has them,
// otherwise they are decoded to float32; unsigned 16/32/64-bit types widen to the next signed type on
// LibTorches without them.
torch::ScalarType torch_dtype(DType d);

class Reader {
 public:
  explicit Reader(const std::filesystem::path& path);
  const Header& header() const { return header_; }
  const std::filesystem::path& path() const;
  const Entry* find(std::string_view name) const;
  torch::Tensor load(std::string_view name) const;  // Error if absent
  torch::Tensor load(const Entry& e) const;
  TensorFile load_all() const;
  // Loads only the named tensors; a missing name is an Error listing it.
  TensorMap load_some(const std::set<std::string>& names) const;

 private:
  std::shared_ptr<MappedFile> file_;
  Header header_;
};

TensorFile load(const std::filesystem::path& path);

// Serialises header + data as the reference writer does (tensors ordered by its dtype enum, descending
// - largest elements first - then name; header padded with spaces to a multiple of 8), so the bytes
// equal safetensors.torch.save's for the same tensors and (at most one key of) metadata. Tensors are
// written contiguous, on CPU.
std::string serialize(const TensorMap& tensors, const Metadata& metadata = {});
// Writes atomically. Throws Error for unsupported dtypes, naming the tensor.
void save(const std::filesystem::path& path, const TensorMap& tensors, const Metadata& metadata = {});

}  // namespace atelier::safetensors
