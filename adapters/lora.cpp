#include "adapters/lora.h"

#include <cmath>
#include <map>
#include <regex>

#include "core/error.h"

namespace atelier {
namespace {

const torch::nn::LinearImpl* as_linear(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::LinearImpl*>(&m);
}
const torch::nn::Conv2dImpl* as_conv(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::Conv2dImpl*>(&m);
}
const torch::Tensor& layer_weight(const torch::nn::Module& m) {
  if (auto* l = as_linear(m)) return l->weight;
  return as_conv(m)->weight;
}

std::regex glob_regex(const std::string& pattern) {
  std::string re;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char ch = pattern[i];
    if (ch == '*' && i + 1 < pattern.size() && pattern[i + 1] == '*') {
      re += ".*";
      ++i;
    } else if (ch == '*') {
      re += "[^.]*";
    } else if (std::string(".[]()+?^$|\\{}").find(ch) != std::string::npos) {
      re += std::string("\\") + ch;
    } else {
      re += ch;
    }
  }
  return std::regex(re);
}

}  // namespace

bool matches_target(const std::string& path, const std::string& pattern) {
  if (pattern.find('*') != std::string::npos) return std::regex_match(path, glob_regex(pattern));
  return path == pattern ||
         (path.size() > pattern.size() && path.compare(path.size() - pattern.size(), pattern.size(), pattern) == 0 &&
          path[path.size() - pattern.size() - 1] == '.');
}

torch::nn::Module& layer_at(torch::nn::Module& model, const std::string& path) {
  for (auto& item : model.named_modules("", /*include_self=*/false))
    if (item.key() == path) {
      if (!as_linear(*item.value()) && !as_conv(*item.value()))
        fail("'", path, "' is neither a Linear nor a Conv2d layer");
      return *item.value();
    }
  fail("the model has no layer '", path, "'");
}

LoRALayerImpl::LoRALayerImpl(const torch::nn::Module& target, const LoRAOptions& o, const std::string& path)
    : dropout(o.dropout) {
  if (o.rank <= 0) fail("LoRA rank must be positive, got ", o.rank);
  scale = o.alpha / static_cast<double>(o.rank);
  const auto& w = layer_weight(target);
  const auto opts = w.options().requires_grad(false);
  if (auto* c = as_conv(target)) {
    if (c->options.groups() != 1) fail("LoRA on '", path, "': grouped convolutions are not supported");
    if (!std::holds_alternative<torch::ExpandingArray<2>>(c->options.padding()))
      fail("LoRA on '", path, "': string padding modes are not supported");
    conv = true;
    stride = c->options.stride();
    padding = std::get<torch::ExpandingArray<2>>(c->options.padding());
    dilation = c->options.dilation();
    down = register_parameter("down", torch::empty({o.rank, w.size(1), w.size(2), w.size(3)}, opts));
    up = register_parameter("up", torch::zeros({w.size(0), o.rank, 1, 1}, opts));
  } else {
    down = register_parameter("down", torch::empty({o.rank, w.size(1)}, opts));
    up = register_parameter("up", torch::zeros({w.size(0), o.rank}, opts));
  }
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(down, std::sqrt(5.0));
}

torch::Tensor LoRALayerImpl::delta(const torch::Tensor& x) {
  auto in = dropout > 0 && is_training() ? torch::dropout(x, dropout, true) : x;
  torch::Tensor h;
  if (conv) {
    h = torch::conv2d(in, down, {}, stride, padding, dilation);
    h = torch::conv2d(h, up);
  } else {
    h = torch::nn::functional::linear(torch::nn::functional::linear(in, down), up);
  }
  return scale == 1.0 ? h : h * scale;
}

torch::Tensor LoRALayerImpl::weight_delta() const {
  if (!conv) return scale * up.matmul(down);
  auto flat = up.flatten(1).matmul(down.flatten(1));  // [out, in*kh*kw]
  return scale * flat.view({up.size(0), down.size(1), down.size(2), down.size(3)});
}

LoRA LoRA::create(torch::nn::Module& model, const std::vector<std::string>& patterns, const LoRAOptions& options,
                  Rng* init) {
  LoRA lora;
  lora.options_ = options;
  for (auto& item : model.named_modules("", /*include_self=*/false)) {
    const auto& m = *item.value();
    if (!as_linear(m) && !as_conv(m)) continue;
    for (const auto& p : patterns)
      if (matches_target(item.key(), p)) {
        lora.paths_.push_back(item.key());
        lora.layers_.push_back(LoRALayer(m, options, item.key()));
        if (init != nullptr) {
          torch::NoGradGuard no_grad;
          auto& down = lora.layers_.back()->down;
          const double bound = 1.0 / std::sqrt(static_cast<double>(down[0].numel()));  // fan_in = in * kh * kw
          down.copy_((init->rand(down.sizes()) * 2 - 1) * bound);
        }
        break;
      }
  }
  if (lora.paths_.empty()) {
    std::string list;
    for (const auto& p : patterns) list += (list.empty() ? "" : ", ") + p;
    fail("LoRA targets [", list, "] match no Linear or Conv2d layer of the model");
  }
  return lora;
}

std::vector<torch::Tensor> LoRA::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& l : layers_) {
    out.push_back(l->down);
    out.push_back(l->up);
  }
  return out;
}

std::int64_t LoRA::numel() const {
  std::int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

void LoRA::attach(LayerHooks& hooks, torch::nn::Module& model, double weight) const {
  for (std::size_t i = 0; i < layers_.size(); ++i) hooks.attach(layer_at(model, paths_[i]), layers_[i].ptr(), weight);
}

void LoRA::detach(LayerHooks& hooks) const {
  for (const auto& l : layers_) hooks.detach(l.get());
}

void add_lora_updates(const std::vector<std::pair<LoRA, double>>& loras,
                      const std::function<torch::Tensor(const std::string&)>& weight_of) {
  torch::NoGradGuard no_grad;
  std::map<std::string, std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>>> by_layer;  // ups, downs
  for (const auto& [lora, weight] : loras)
    for (std::size_t i = 0; i < lora.paths().size(); ++i) {
      const auto& l = lora.layers()[i];
      auto& [ups, downs] = by_layer[lora.paths()[i]];
      ups.push_back(l->up.flatten(1) * (weight * l->scale));  // [out, r]
      downs.push_back(l->down.flatten(1));                    // [r, in * kh * kw]
    }
  for (auto& [path, factors] : by_layer) {
    auto w = weight_of(path);
    auto flat = w.view({w.size(0), -1});
    const auto up = torch::cat(factors.first, 1).to(w.options());
    const auto down = torch::cat(factors.second, 0).to(w.options());
    flat.addmm_(up, down);
  }
}

void LoRA::merge(torch::nn::Module& model, double weight) const {
  add_lora_updates({{*this, weight}}, [&](const std::string& path) { return layer_weight(layer_at(model, path)); });
}

void LoRA::unmerge(torch::nn::Module& model, double weight) const {
  merge(model, -weight);
}

void LoRA::to(const torch::Device& device) {
  for (auto& l : layers_) l->to(device);
}

void LoRA::scale_blocks(const std::vector<double>& block_weights) {
  if (block_weights.empty()) return;
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < paths_.size(); ++i) {
    const auto& p = paths_[i];
    if (p.rfind("blocks.", 0) != 0) continue;
    const auto block = std::stoul(p.substr(7, p.find('.', 7) - 7));
    if (block >= block_weights.size())
      fail_field("block_weights", block_weights.size(), " weights, but LoRA layer '", p, "' is in block ", block);
    layers_[i]->up.mul_(block_weights[block]);
  }
}

void LoRA::train(bool on) {
  for (auto& l : layers_) l->train(on);
}

void LoRA::add_layer(const std::string& path, LoRALayer layer) {
  paths_.push_back(path);
  layers_.push_back(std::move(layer));
}

TensorMap LoRA::tensors() const {
  TensorMap out;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    out[paths_[i] + ".lora_A.weight"] = layers_[i]->down.detach();
    out[paths_[i] + ".lora_B.weight"] = layers_[i]->up.detach();
    out[paths_[i] + ".alpha"] = torch::tensor(static_cast<float>(layers_[i]->alpha()));
  }
  return out;
}

LoRA LoRA::from_tensors(torch::nn::Module& model, const TensorMap& tensors, const LoRAOptions& options,
                        const std::string& source) {
  LoRA lora;
  lora.options_ = options;
  const std::string suffix = ".lora_A.weight";
  for (const auto& [name, down] : tensors) {
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string path = name.substr(0, name.size() - suffix.size());
    auto up = tensors.find(path + ".lora_B.weight");
    if (up == tensors.end()) fail(source, ": '", name, "' has no matching '", path, ".lora_B.weight'");
    auto& target =
        with_context([&]() -> torch::nn::Module& { return layer_at(model, path); }, source, ": '", name, "'");
    LoRAOptions o = options;
    o.rank = down.size(0);
    if (auto alpha = tensors.find(path + ".alpha"); alpha != tensors.end()) o.alpha = alpha->second.item<double>();
    LoRALayer layer(target, o, path);
    if (layer->down.sizes() != down.sizes() || layer->up.sizes() != up->second.sizes())
      fail(source, ": LoRA '", path, "' has down ", down.sizes(), " and up ", up->second.sizes(), "; layer expects ",
           layer->down.sizes(), " and ", layer->up.sizes());
    torch::NoGradGuard no_grad;
    layer->down.copy_(down);
    layer->up.copy_(up->second);
    lora.paths_.push_back(path);
    lora.layers_.push_back(layer);
  }
  if (lora.paths_.empty()) fail(source, ": no LoRA tensors ('<layer>.lora_A.weight')");
  return lora;
}

}  // namespace atelier
