// Additive updates on a network's Linear and Conv2d layers (LoRA and its kin), attached by layer. The
// layer's own parameters, their names and the state dict stay untouched: the network calls its layers
// through a LayerHooks table, which adds weight * delta(input) for every update attached to that layer.
//
//   LayerHooks hooks;
//   hooks.attach(*block->qkv, lora_layer, 0.8);     // qkv(x) now returns W x + b + 0.8 * lora(x)
//   auto y = hooks.linear(*block->qkv, x);
#pragma once
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <memory>
#include <unordered_map>
#include <vector>

namespace atelier {

// One additive update: delta(input) has the layer's output shape.
class LayerDelta {
 public:
  virtual ~LayerDelta() = default;
  virtual torch::Tensor delta(const torch::Tensor& input) = 0;
};

class LayerHooks {
 public:
  void attach(const torch::nn::Module& layer, std::shared_ptr<LayerDelta> update, double weight = 1.0);
  // Removes `update` from every layer it is attached to.
  void detach(const LayerDelta* update);
  void clear() { table_.clear(); }
  bool empty() const { return table_.empty(); }
  std::size_t count(const torch::nn::Module& layer) const;

  torch::Tensor linear(torch::nn::LinearImpl& layer, const torch::Tensor& x) const;
  torch::Tensor conv2d(torch::nn::Conv2dImpl& layer, const torch::Tensor& x) const;
  // `out` (the layer's own output for input x, however the network computed it) plus the updates
  // attached to `layer`.
  torch::Tensor add_updates(const torch::nn::Module& layer, torch::Tensor out, const torch::Tensor& x) const;

 private:
  struct Entry {
    std::shared_ptr<LayerDelta> update;
    double weight;
  };
  std::unordered_map<const torch::nn::Module*, std::vector<Entry>> table_;
};

}  // namespace atelier
