// Named tensors plus string metadata: what every checkpoint/adapter file in Atelier reads into and
// writes from.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace atelier {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct TensorFile {
  TensorMap tensors;
  Metadata metadata;
};

// The tensors whose names start with `prefix` (e.g. "ema."), renamed without it; empty if none.
TensorMap tensors_under(const TensorMap& tensors, std::string_view prefix);
// "blocks.3.attn.qkv" -> {"blocks", "3", "attn", "qkv"} (views into `key`).
std::vector<std::string_view> split_key(std::string_view key);

}  // namespace atelier
