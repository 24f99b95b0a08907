#include "eval/probe.h"

#include <cmath>

#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/shapes.h"

namespace atelier {
namespace {

// Appends conv-norm-SiLU x2 (+ 2x2 average pool) to `s`.
void add_stage(torch::nn::Sequential& s, int in, int out, bool pool) {
  s->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)));
  s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::min(8, out / 2), out)));
  s->push_back(torch::nn::SiLU());
  s->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)));
  s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::min(8, out / 2), out)));
  s->push_back(torch::nn::SiLU());
  if (pool) s->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2)));
}

}  // namespace

ProbeNetImpl::ProbeNetImpl(ProbeOptions options) : options_(options) {
  const int w = options.width;
  torch::nn::Sequential features;
  add_stage(features, 3, w, true);
  add_stage(features, w, 2 * w, true);
  add_stage(features, 2 * w, 4 * w, false);
  features_ = register_module("features", features);
  label_head_ = register_module("label_head", torch::nn::Linear(4 * w, probe_num_labels()));
  style_head_ = register_module("style_head", torch::nn::Linear(4 * w, static_cast<int>(shapes::style_names().size())));
}

torch::Tensor ProbeNetImpl::resized(const torch::Tensor& x) const {
  const std::int64_t s = options_.image_size;
  if (s <= 0 || (x.size(2) == s && x.size(3) == s)) return x;
  namespace F = torch::nn::functional;
  auto o = F::InterpolateFuncOptions().size(std::vector<std::int64_t>{s, s});
  if (x.size(2) >= s && x.size(3) >= s) return F::interpolate(x, o.mode(torch::kArea));
  return F::interpolate(x, o.mode(torch::kBilinear).align_corners(false));
}

torch::Tensor ProbeNetImpl::features(const torch::Tensor& x) {
  return features_->forward(resized(x)).mean({2, 3});  // [N, 4w]
}

std::pair<torch::Tensor, torch::Tensor> ProbeNetImpl::forward(const torch::Tensor& x) {
  auto f = features(x);
  return {label_head_->forward(f), style_head_->forward(f)};
}

ProbeAccuracy probe_accuracy(ProbeNet& net, const torch::Tensor& images, const torch::Tensor& labels,
                             const torch::Tensor& styles) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::int64_t correct_label = 0, correct_style = 0, n = images.size(0);
  for (std::int64_t i = 0; i < n; i += 256) {
    auto x = images.slice(0, i, std::min(n, i + 256));
    auto [l, s] = net->forward(x);
    correct_label += l.argmax(1).eq(labels.slice(0, i, i + x.size(0))).sum().item<std::int64_t>();
    if (styles.defined()) correct_style += s.argmax(1).eq(styles.slice(0, i, i + x.size(0))).sum().item<std::int64_t>();
  }
  net->train();
  return {static_cast<double>(correct_label) / n, static_cast<double>(correct_style) / n};
}

ProbeNet load_probe(const std::filesystem::path& path) {
  TensorFile f = safetensors::load(path);
  auto it = f.metadata.find("probe.width");
  if (it == f.metadata.end()) fail(path.string(), ": not a Shapes probe (no probe.width metadata)");
  ProbeOptions options{std::stoi(it->second)};
  if (auto size = f.metadata.find("probe.image_size"); size != f.metadata.end())
    options.image_size = std::stoi(size->second);
  ProbeNet net(options);
  load_module_tensors(*net, f.tensors, "", path.string());
  net->eval();
  return net;
}

}  // namespace atelier
