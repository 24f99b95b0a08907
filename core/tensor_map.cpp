#include "core/tensor_map.h"

namespace atelier {

TensorMap tensors_under(const TensorMap& tensors, std::string_view prefix) {
  TensorMap out;
  for (const auto& [name, t] : tensors)
    if (std::string_view(name).starts_with(prefix)) out.emplace(name.substr(prefix.size()), t);
  return out;
}

std::vector<std::string_view> split_key(std::string_view key) {
  std::vector<std::string_view> out;
  for (std::size_t start = 0;;) {
    auto dot = key.find('.', start);
    out.push_back(key.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

}  // namespace atelier
