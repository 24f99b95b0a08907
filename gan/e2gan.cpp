#include "gan/e2gan.h"

#include <cmath>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/training_state.h"

namespace atelier {
namespace {

namespace F = torch::nn::functional;

torch::nn::InstanceNorm2d instance_norm(std::int64_t channels) {
  return torch::nn::InstanceNorm2d(torch::nn::InstanceNorm2dOptions(channels).affine(true).eps(1e-5));
}

torch::nn::Conv2d conv3x3(std::int64_t in, std::int64_t out, std::int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

// softmax(q k^T / sqrt(d)) v over heads: q [N, T, D], k/v [N, S, D] -> [N, T, D].
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, std::int64_t heads) {
  const auto n = q.size(0), t = q.size(1), s = k.size(1), d = q.size(2);
  const auto hd = d / heads;
  auto split = [&](const torch::Tensor& x, std::int64_t len) { return x.reshape({n, len, heads, hd}).transpose(1, 2); };
  auto w = torch::matmul(split(q, t), split(k, s).transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto out = torch::matmul(w.softmax(-1), split(v, s));
  return out.transpose(1, 2).reshape({n, t, d});
}

}  // namespace

GanResBlockImpl::GanResBlockImpl(std::int64_t channels, bool norm, std::shared_ptr<LayerHooks> hooks)
    : hooks_(std::move(hooks)) {
  conv1 = register_module("conv1", conv3x3(channels, channels, 1));
  if (norm) norm1 = register_module("norm1", instance_norm(channels));
  conv2 = register_module("conv2", conv3x3(channels, channels, 1));
  if (norm) norm2 = register_module("norm2", instance_norm(channels));
}

torch::Tensor GanResBlockImpl::forward(const torch::Tensor& x) {
  auto h = hooks_->conv2d(*conv1, x);
  h = torch::relu(norm1 ? norm1(h) : h);
  h = hooks_->conv2d(*conv2, h);
  return x + (norm2 ? norm2(h) : h);
}

GanStageImpl::GanStageImpl(std::int64_t in, std::int64_t out, bool up_, bool norm_, bool relu_,
                           std::shared_ptr<LayerHooks> hooks)
    : up(up_), relu(relu_), hooks_(std::move(hooks)) {
  conv = register_module("conv", conv3x3(in, out, up ? 1 : 2));
  if (norm_ && relu) norm = register_module("norm", instance_norm(out));
}

torch::Tensor GanStageImpl::forward(const torch::Tensor& x) {
  auto in = up ? F::interpolate(
                     x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest))
               : x;
  auto h = hooks_->conv2d(*conv, in);
  if (norm) h = norm(h);
  return relu ? torch::relu(h) : h;
}

EditBlockImpl::EditBlockImpl(std::int64_t dim, std::int64_t heads_, double mlp_ratio, std::shared_ptr<LayerHooks> hooks)
    : heads(heads_), hooks_(std::move(hooks)) {
  const auto hidden = static_cast<std::int64_t>(std::llround(static_cast<double>(dim) * mlp_ratio));
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5)); };
  norm1 = register_module("norm1", ln());
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
  norm2 = register_module("norm2", ln());
  q = register_module("q", torch::nn::Linear(dim, dim));
  kv = register_module("kv", torch::nn::Linear(dim, 2 * dim));
  cross_proj = register_module("cross_proj", torch::nn::Linear(dim, dim));
  norm3 = register_module("norm3", ln());
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

torch::Tensor EditBlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& edit) {
  auto x = x_in;
  auto qkv_out = hooks_->linear(*qkv, norm1(x)).chunk(3, -1);
  x = x + hooks_->linear(*proj, attention(qkv_out[0], qkv_out[1], qkv_out[2], heads));
  auto kv_out = hooks_->linear(*kv, edit).chunk(2, -1);
  x = x + hooks_->linear(*cross_proj, attention(hooks_->linear(*q, norm2(x)), kv_out[0], kv_out[1], heads));
  return x + hooks_->linear(*fc2, torch::gelu(hooks_->linear(*fc1, norm3(x))));
}

E2GanGeneratorImpl::E2GanGeneratorImpl(const E2GanConfig& c) : config_(c) {
  if (c.channels.size() != 3) fail_field("channels", "needs three widths (strides 2, 4, 8), got ", c.channels.size());
  const auto c0 = c.channels[0], c1 = c.channels[1], c2 = c.channels[2];
  if (c2 % c.heads != 0) fail_field("heads", c.heads, " does not divide the last width ", c2);
  const bool in = c.instance_norm();
  down = register_module(
      "down", torch::nn::ModuleList(GanStage(3, c0, false, in, true, hooks_), GanStage(c0, c1, false, in, true, hooks_),
                                    GanStage(c1, c2, false, in, true, hooks_)));
  res = register_module("res", torch::nn::ModuleList(GanResBlock(c0, in, hooks_), GanResBlock(c0, in, hooks_),
                                                     GanResBlock(c0, in, hooks_)));
  block = register_module("block", EditBlock(c2, c.heads, c.mlp_ratio, hooks_));
  up = register_module(
      "up", torch::nn::ModuleList(GanStage(c0, 3, true, false, false, hooks_), GanStage(c1, c0, true, in, true, hooks_),
                                  GanStage(c2, c1, true, in, true, hooks_)));
  edits = register_parameter("edits", torch::randn({c.num_edits, c.edit_tokens, c2}) * 0.02);
}

torch::Tensor E2GanGeneratorImpl::forward(const torch::Tensor& x, const torch::Tensor& edit) {
  return forward_tokens(x, edits.index_select(0, edit.to(edits.device())));
}

torch::Tensor E2GanGeneratorImpl::forward_tokens(const torch::Tensor& x, const torch::Tensor& tokens) {
  const auto n = x.size(0), h = x.size(2), w = x.size(3);
  const auto s = config_.stride();
  if (x.dim() != 4 || x.size(1) != 3 || h % s != 0 || w % s != 0 || h == 0 || w == 0)
    fail("E2GAN generator: input ", x.sizes(), " must be [N, 3, H, W] with H and W multiples of ", s);
  auto edit = tokens.dim() == 2 ? tokens.unsqueeze(0).expand({n, tokens.size(0), tokens.size(1)}) : tokens;
  auto stage = [](torch::nn::ModuleList& list, std::size_t i, const torch::Tensor& in) {
    return list[i]->as<GanStageImpl>()->forward(in);
  };
  auto resblock = [&](std::size_t i, const torch::Tensor& in) { return res[i]->as<GanResBlockImpl>()->forward(in); };
  auto f1 = resblock(1, resblock(0, stage(down, 0, x)));
  auto f2 = stage(down, 1, f1);
  auto f3 = stage(down, 2, f2);
  const auto c2 = f3.size(1), th = f3.size(2), tw = f3.size(3);
  auto tok = block(f3.flatten(2).transpose(1, 2), edit);
  auto g3 = tok.transpose(1, 2).reshape({n, c2, th, tw});
  auto g2 = stage(up, 2, g3) + f2;
  auto g1 = resblock(2, stage(up, 1, g2) + f1);
  return torch::tanh(stage(up, 0, g1));
}

std::int64_t E2GanGeneratorImpl::add_edit(const torch::Tensor& init) {
  torch::NoGradGuard no_grad;
  auto row = init.reshape({1, config_.edit_tokens, config_.channels[2]}).to(edits.options());
  auto table = torch::cat({edits.detach(), row}).clone();
  edits.set_data(table);
  config_.num_edits = table.size(0);
  return table.size(0) - 1;
}

const std::vector<std::pair<std::string, std::vector<std::string>>>& e2gan_crucial_groups() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> groups = {
      {"down", {"down.0.conv", "down.1.conv", "down.2.conv"}},
      {"block", {"block.qkv", "block.proj", "block.q", "block.kv", "block.cross_proj", "block.fc1", "block.fc2"}},
      {"up", {"up.2.conv", "up.1.conv", "up.0.conv"}}};
  return groups;
}

PatchDiscriminatorImpl::PatchDiscriminatorImpl(const PatchDiscriminatorConfig& c) {
  const auto w = c.width;
  auto conv = [](std::int64_t in, std::int64_t out, std::int64_t stride) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 4).stride(stride).padding(1));
  };
  convs = register_module(
      "conv", torch::nn::ModuleList(conv(6, w, 2), conv(w, 2 * w, 2), conv(2 * w, 4 * w, 1), conv(4 * w, 1, 1)));
  norms = register_module("norm", torch::nn::ModuleList(instance_norm(2 * w), instance_norm(4 * w)));
}

torch::Tensor PatchDiscriminatorImpl::forward(const torch::Tensor& input, const torch::Tensor& output, bool frozen) {
  if (input.size(2) < 16 || input.size(3) < 16)
    fail("PatchGAN discriminator: images of ", input.size(2), "x", input.size(3), " are smaller than 16x16");
  auto param = [&](const torch::Tensor& p) { return frozen ? p.detach() : p; };
  auto x = torch::cat({input, output}, 1);
  for (std::size_t i = 0; i < convs->size(); ++i) {
    auto* conv = convs[i]->as<torch::nn::Conv2dImpl>();
    x = torch::conv2d(x, param(conv->weight), param(conv->bias), conv->options.stride(),
                      std::get<torch::ExpandingArray<2>>(conv->options.padding()));
    if (i == 1 || i == 2) {
      auto* norm = norms[i - 1]->as<torch::nn::InstanceNorm2dImpl>();
      x = torch::instance_norm(x, param(norm->weight), param(norm->bias), {}, {}, true, 0.0, norm->options.eps(),
                               false);
    }
    if (i + 1 < convs->size()) x = torch::leaky_relu(x, 0.2);
  }
  return x;
}

void save_generator(const std::filesystem::path& path, E2GanGenerator& generator, const GeneratorInfo& info,
                    const json& job_config) {
  safetensors::save(path, module_tensors(*generator),
                    {{"atelier.kind", "e2gan_generator"},
                     {"e2gan.config", json_text(to_json(generator->config()))},
                     {"edits", json_text(info.edits)},
                     {"image_size", std::to_string(info.image_size)},
                     {"atelier.config", json_text(job_config)}});
}

E2GanGenerator load_generator(const std::filesystem::path& path, GeneratorInfo* info) {
  const std::string what = path.string();
  if (!std::filesystem::exists(path)) fail(what, ": generator file does not exist");
  TensorFile f = safetensors::load(path);
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(what, ": not an E2GAN generator file (metadata '", key, "' missing)");
    return it->second;
  };
  if (meta("atelier.kind") != "e2gan_generator")
    fail(what, ": not an E2GAN generator file (kind '", meta("atelier.kind"), "')");
  GeneratorInfo i;
  i.config = with_context([&] { return from_json<E2GanConfig>(parse_json(meta("e2gan.config"), what)); }, what,
                          ": e2gan.config");
  i.edits = string_list(parse_json(meta("edits"), what + ": metadata 'edits'"), what + ": edits");
  i.image_size = std::stoll(meta("image_size"));
  if (static_cast<std::int64_t>(i.edits.size()) != i.config.num_edits)
    fail(what, ": ", i.edits.size(), " edit names for ", i.config.num_edits, " edit rows");
  E2GanGenerator g(i.config);
  load_module_tensors(*g, f.tensors, "", what);
  if (info != nullptr) *info = std::move(i);
  return g;
}

std::int64_t edit_index(const GeneratorInfo& info, const std::string& edit, const std::string& source) {
  for (std::size_t k = 0; k < info.edits.size(); ++k)
    if (info.edits[k] == edit) return static_cast<std::int64_t>(k);
  std::string known;
  for (const auto& e : info.edits) known += (known.empty() ? "" : ", ") + e;
  fail(source, ": no edit '", edit, "' (it knows: ", known, ")");
}

torch::Tensor lsgan_d_loss(const torch::Tensor& real_logits, const torch::Tensor& fake_logits) {
  return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean());
}

torch::Tensor lsgan_g_loss(const torch::Tensor& fake_logits) {
  return (fake_logits - 1).pow(2).mean();
}

}  // namespace atelier
