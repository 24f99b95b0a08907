// torch.save zip checkpoints (.pt/.pth/.ckpt/.bin): zip directory, restricted unpickling of data.pkl,
// tensors rebuilt from data/<key> storages (strides, offsets and shared storages preserved).
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/pickle.h"
#include "core/tensor_map.h"
#include "core/zip_directory.h"

namespace atelier {

class MappedFile;

// A loaded checkpoint: the unpickled object tree, with tensors as Custom values holding torch::Tensor.
struct TorchCheckpoint {
  pickle::ValuePtr root;
  std::string top_folder;  // "archive", or whatever folder the writer used
  std::filesystem::path path;
};
TorchCheckpoint load_torch_checkpoint(const std::filesystem::path& path);
// The torch::Tensor inside a tensor value, or nullptr if `v` is not a tensor.
const torch::Tensor* as_tensor(const pickle::ValuePtr& v);

// Flattens nested dicts of tensors to "a.b.c" names. Non-tensor leaves (e.g. an argparse Namespace,
// numbers, strings) go into metadata as their repr under the same dotted name.
TensorFile flatten_checkpoint(const TorchCheckpoint& ckpt);

}  // namespace atelier
