// Strict loading of weights whose names a key table translated (DiT, UNet, VAE, CLIP text dialects): the
// errors name the model's keys, and each translated one is followed by the file's own name, so a user
// can find it in the file.
#pragma once
#include <map>
#include <string>

#include "core/tensor_map.h"

namespace torch::nn {
class Module;
}

namespace atelier {

// load_module_tensors(module, tensors, "", what, strict) with, on an Error, "'key' (file: 'its name')"
// for every key of `origin` (model key -> file key) the message names.
void load_translated_tensors(torch::nn::Module& module, const TensorMap& tensors,
                             const std::map<std::string, std::string>& origin, const std::string& what);

}  // namespace atelier
