// Named tensors plus string metadata: what every checkpoint/adapter file in Atelier reads into and
// writes from.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>

namespace atelier {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct TensorFile {
  TensorMap tensors;
  Metadata metadata;
};

}  // namespace atelier
