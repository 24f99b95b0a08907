// LoRA (Hu et al., 2021) on Linear and Conv2d layers: delta(x) = scale * up(down(dropout(x))), with
// down [r, in] (Conv2d: [r, in, kh, kw] with the layer's stride, padding and dilation), up [out, r]
// (Conv2d: a 1x1 conv) and scale = alpha / r. Initialised as PEFT does (down Kaiming-uniform with
// a = sqrt(5), up zeros), so a fresh LoRA leaves the network's output unchanged. A LoRA is a set of such
// layers on named modules of a network, attached through the network's LayerHooks or merged into its
// weights (W += weight * scale * up @ down) and unmerged again.
//
//   LoRA lora = LoRA::create(*dit, {"attn.qkv", "attn.proj"}, {.rank = 8, .alpha = 8});
//   lora.attach(dit->hooks(), 1.0);          // train lora.parameters(), or:
//   lora.merge(*dit, 0.6);  ...  lora.unmerge(*dit, 0.6);
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/layer_hooks.h"
#include "core/rng.h"
#include "core/tensor_map.h"

namespace atelier {

struct LoRAOptions {
  std::int64_t rank = 8;
  double alpha = 8.0;
  double dropout = 0.0;
};

class LoRALayerImpl : public torch::nn::Module, public LayerDelta {
 public:
  // `target` must be a torch::nn::Linear or torch::nn::Conv2d (without groups).
  LoRALayerImpl(const torch::nn::Module& target, const LoRAOptions& options, const std::string& path);
  torch::Tensor delta(const torch::Tensor& x) override;
  // scale * up @ down in the target weight's shape.
  torch::Tensor weight_delta() const;

  torch::Tensor down, up;
  double scale = 1.0;
  double alpha() const { return scale * static_cast<double>(down.size(0)); }
  double dropout = 0.0;
  bool conv = false;
  torch::ExpandingArray<2> stride = torch::ExpandingArray<2>(1), padding = torch::ExpandingArray<2>(0),
                           dilation = torch::ExpandingArray<2>(1);
};
TORCH_MODULE(LoRALayer);

// Does `path` (a dotted module path) match a target pattern? Patterns with '*' (one path segment) or
// '**' (any segments) match the whole path; other patterns match the path or its tail as PEFT's
// target_modules do: "attn.qkv" matches "blocks.3.attn.qkv".
bool matches_target(const std::string& path, const std::string& pattern);

class LoRA {
 public:
  // One layer per Linear/Conv2d of `model` whose path matches any pattern; Error when none matches. The
  // down-projections are drawn from `init` (Kaiming-uniform, a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)))
  // so a seeded job is reproducible; without it, from LibTorch's global generator.
  static LoRA create(torch::nn::Module& model, const std::vector<std::string>& patterns, const LoRAOptions& options,
                     Rng* init = nullptr);

  const std::vector<std::string>& paths() const { return paths_; }
  const std::vector<LoRALayer>& layers() const { return layers_; }
  const LoRAOptions& options() const { return options_; }
  std::vector<torch::Tensor> parameters() const;
  std::int64_t numel() const;

  void attach(LayerHooks& hooks, torch::nn::Module& model, double weight = 1.0) const;
  void detach(LayerHooks& hooks) const;
  void merge(torch::nn::Module& model, double weight = 1.0) const;
  void unmerge(torch::nn::Module& model, double weight = 1.0) const;
  void to(const torch::Device& device);
  // Per-block weights: multiplies the update of every layer under "blocks.<i>." by block_weights[i]
  // (layers outside the blocks keep theirs). Error when a block index has no weight.
  void scale_blocks(const std::vector<double>& block_weights);
  void train(bool on);

  // Adds one layer (e.g. read from a LoRA file) for the layer at `path`.
  void add_layer(const std::string& path, LoRALayer layer);

  // Atelier's names: "<path>.lora_A.weight" (down), "<path>.lora_B.weight" (up), PEFT's layout, and
  // "<path>.alpha" (a scalar: scale = alpha / rank).
  TensorMap tensors() const;
  // Rebuilds a LoRA from tensors() output onto `model`; every path must name a matching layer. Layers
  // without an alpha tensor take options.alpha.
  static LoRA from_tensors(torch::nn::Module& model, const TensorMap& tensors, const LoRAOptions& options,
                           const std::string& source);

 private:
  std::vector<std::string> paths_;
  std::vector<LoRALayer> layers_;
  LoRAOptions options_;
};

// Adds sum_i weight_i * scale_i * up_i @ down_i to every targeted layer weight in place, with one fused
// GEMM per layer (the LoRAs' factors concatenated along the rank, so each weight is read and written
// once). `weight_of(path)` returns the layer weight to update (a parameter or a copy of it).
void add_lora_updates(const std::vector<std::pair<LoRA, double>>& loras,
                      const std::function<torch::Tensor(const std::string&)>& weight_of);

// The Linear or Conv2d module at `path` of `model`; Error naming the path otherwise.
torch::nn::Module& layer_at(torch::nn::Module& model, const std::string& path);

}  // namespace atelier
