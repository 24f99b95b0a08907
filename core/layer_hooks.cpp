#include "core/layer_hooks.h"

#include <algorithm>

namespace atelier {

void LayerHooks::attach(const torch::nn::Module& layer, std::shared_ptr<LayerDelta> update, double weight) {
  table_[&layer].push_back({std::move(update), weight});
}

void LayerHooks::detach(const LayerDelta* update) {
  for (auto it = table_.begin(); it != table_.end();) {
    auto& entries = it->second;
    entries.erase(
        std::remove_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.update.get() == update; }),
        entries.end());
    it = entries.empty() ? table_.erase(it) : std::next(it);
  }
}

std::size_t LayerHooks::count(const torch::nn::Module& layer) const {
  auto it = table_.find(&layer);
  return it == table_.end() ? 0 : it->second.size();
}

torch::Tensor LayerHooks::add_updates(const torch::nn::Module& layer, torch::Tensor out, const torch::Tensor& x) const {
  auto it = table_.find(&layer);
  if (it == table_.end()) return out;
  for (const auto& e : it->second) {
    auto d = e.update->delta(x);
    out = e.weight == 1.0 ? out + d : out + e.weight * d;
  }
  return out;
}

torch::Tensor LayerHooks::linear(torch::nn::LinearImpl& layer, const torch::Tensor& x) const {
  return add_updates(layer, layer.forward(x), x);
}

torch::Tensor LayerHooks::conv2d(torch::nn::Conv2dImpl& layer, const torch::Tensor& x) const {
  return add_updates(layer, layer.forward(x), x);
}

}  // namespace atelier
