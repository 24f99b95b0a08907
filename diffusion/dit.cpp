// Ref: facebookresearch/DiT@ed81ce2 models.py (DiT, DiTBlock, FinalLayer, embedders, pos embeddings).
#include "diffusion/dit.h"

#include <torch/version.h>

#include <cmath>

#include "core/error.h"

namespace atelier {
namespace F = torch::nn::functional;

namespace {
// x * (1 + scale) + shift, with shift/scale [N, D] broadcast over tokens.
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return torch::addcmul(shift.unsqueeze(1), x, scale.unsqueeze(1) + 1);
}

torch::Tensor layer_norm(const torch::Tensor& x) {
  return torch::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6);
}

std::shared_ptr<torch::nn::Module> child(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}
}  // namespace

DiTConfig dit_preset(const std::string& name) {
  struct Size {
    const char* name;
    std::int64_t depth, hidden, heads;
  };
  static const Size sizes[] = {
      {"XL", 28, 1152, 16}, {"L", 24, 1024, 16}, {"B", 12, 768, 12}, {"S", 12, 384, 6}, {"T", 6, 128, 4}};
  for (const auto& s : sizes) {
    for (int p : {2, 4, 8}) {
      if (name == std::string("DiT-") + s.name + "/" + std::to_string(p)) {
        DiTConfig c;
        c.depth = s.depth;
        c.hidden_size = s.hidden;
        c.num_heads = s.heads;
        c.patch_size = p;
        return c;
      }
    }
  }
  std::string list;
  for (const auto& n : dit_preset_names()) list += (list.empty() ? "" : ", ") + n;
  fail("unknown DiT preset '", name, "' (known: ", list, ")");
}

std::vector<std::string> dit_preset_names() {
  std::vector<std::string> out;
  for (const char* s : {"XL", "L", "B", "S", "T"})
    for (int p : {2, 4, 8}) out.push_back(std::string("DiT-") + s + "/" + std::to_string(p));
  return out;
}

torch::Tensor sincos_pos_embed_2d(std::int64_t dim, std::int64_t grid, double base_size) {
  if (dim % 4 != 0) fail("positional embedding width ", dim, " must be a multiple of 4");
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto coords = torch::arange(grid, opts);
  if (base_size > 0) coords = coords / (static_cast<double>(grid) / base_size);
  auto mesh = torch::meshgrid({coords, coords}, "xy");  // mesh[0][i][j] = w_j, mesh[1][i][j] = h_i
  auto embed_1d = [&](const torch::Tensor& pos) {
    auto omega = torch::arange(dim / 4, opts) / (dim / 4.0);
    omega = 1.0 / torch::pow(10000.0, omega);
    auto out = pos.reshape({-1, 1}) * omega.unsqueeze(0);  // [G*G, dim/4]
    return torch::cat({torch::sin(out), torch::cos(out)}, 1);
  };
  return torch::cat({embed_1d(mesh[0]), embed_1d(mesh[1])}, 1).to(torch::kFloat);  // [G*G, dim]
}

torch::Tensor timestep_embedding(const torch::Tensor& t, std::int64_t dim, std::int64_t freq_shift) {
  const std::int64_t half = dim / 2;
  auto freqs = torch::exp(-std::log(10000.0) * torch::arange(half, torch::TensorOptions().dtype(torch::kFloat)) /
                          static_cast<double>(half - freq_shift))
                   .to(t.device());
  auto args = t.to(torch::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  auto emb = torch::cat({torch::cos(args), torch::sin(args)}, 1);
  if (dim % 2 == 1) emb = torch::cat({emb, torch::zeros_like(emb.narrow(1, 0, 1))}, 1);
  return emb;
}

DiTBlockImpl::DiTBlockImpl(std::int64_t hidden, std::int64_t heads_, double mlp_ratio,
                           std::shared_ptr<LayerHooks> hooks_)
    : heads(heads_), hooks(std::move(hooks_)) {
  auto attn = child(*this, "attn");
  qkv = attn->register_module("qkv", torch::nn::Linear(hidden, 3 * hidden));
  proj = attn->register_module("proj", torch::nn::Linear(hidden, hidden));
  auto mlp = child(*this, "mlp");
  auto mlp_hidden = static_cast<std::int64_t>(hidden * mlp_ratio);
  fc1 = mlp->register_module("fc1", torch::nn::Linear(hidden, mlp_hidden));
  fc2 = mlp->register_module("fc2", torch::nn::Linear(mlp_hidden, hidden));
  torch::nn::Sequential ada_seq(torch::nn::SiLU(), torch::nn::Linear(hidden, 6 * hidden));
  register_module("adaLN_modulation", ada_seq);
  ada = torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(ada_seq->ptr(1)));
}

torch::Tensor DiTBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& c) {
  const LayerHooks& hk = *hooks;
  auto mod = hk.linear(*ada, torch::silu(c)).chunk(6, 1);
  const auto &shift_msa = mod[0], &scale_msa = mod[1], &shift_mlp = mod[3], &scale_mlp = mod[4];
  auto gate_msa = mod[2], gate_mlp = mod[5];
  if (gamma_attn.defined()) gate_msa = gate_msa * gamma_attn;
  if (gamma_mlp.defined()) gate_mlp = gate_mlp * gamma_mlp;

  const auto n = x.size(0), tokens = x.size(1), d = x.size(2), hd = d / heads;
  auto h = hk.linear(*qkv, modulate(layer_norm(x), shift_msa, scale_msa));      // [N, T, 3D]
  auto qkv_heads = h.view({n, tokens, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3, N, H, T, hd]
  auto q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];
  auto a = at::scaled_dot_product_attention(q, k, v);
  a = hk.linear(*proj, a.transpose(1, 2).reshape({n, tokens, d}));  // [N, T, D]
  auto out = torch::addcmul(x, gate_msa.unsqueeze(1), a);
  auto m = hk.linear(*fc2, torch::gelu(hk.linear(*fc1, modulate(layer_norm(out), shift_mlp, scale_mlp)), "tanh"));
  return torch::addcmul(out, gate_mlp.unsqueeze(1), m);
}

DiTImpl::DiTImpl(const DiTConfig& c) : config_(c) {
  if (c.input_size % c.patch_size != 0)
    fail("DiT: input_size ", c.input_size, " is not a multiple of patch_size ", c.patch_size);
  if (c.hidden_size % c.num_heads != 0)
    fail("DiT: hidden_size ", c.hidden_size, " is not a multiple of num_heads ", c.num_heads);
  const auto d = c.hidden_size;
  x_proj =
      child(*this, "x_embedder")
          ->register_module(
              "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, d, c.patch_size).stride(c.patch_size)));
  torch::nn::Sequential t_seq(torch::nn::Linear(256, d), torch::nn::SiLU(), torch::nn::Linear(d, d));
  child(*this, "t_embedder")->register_module("mlp", t_seq);
  t_mlp0 = torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(t_seq->ptr(0)));
  t_mlp2 = torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(t_seq->ptr(2)));
  const std::int64_t table_rows = c.num_classes + (c.class_dropout_prob > 0 ? 1 : 0);
  y_table = child(*this, "y_embedder")->register_module("embedding_table", torch::nn::Embedding(table_rows, d));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, c.num_patches(), d}), /*requires_grad=*/false);
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < c.depth; ++i) blocks->push_back(DiTBlock(d, c.num_heads, c.mlp_ratio, hooks_));
  auto final_layer = child(*this, "final_layer");
  final_linear =
      final_layer->register_module("linear", torch::nn::Linear(d, c.patch_size * c.patch_size * c.out_channels()));
  torch::nn::Sequential f_ada(torch::nn::SiLU(), torch::nn::Linear(d, 2 * d));
  final_layer->register_module("adaLN_modulation", f_ada);
  final_ada = torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(f_ada->ptr(1)));
  if (c.final_conv)
    final_conv = register_module(
        "final_conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.out_channels(), c.out_channels(), 3).padding(1)));
  initialize_weights();
}

void DiTImpl::initialize_weights() {
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(lin->weight);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
  const auto grid = config_.input_size / config_.patch_size;
  pos_embed.copy_(sincos_pos_embed_2d(config_.hidden_size, grid).unsqueeze(0));
  auto w = x_proj->weight.view({x_proj->weight.size(0), -1});
  torch::nn::init::xavier_uniform_(w);
  x_proj->bias.zero_();
  torch::nn::init::normal_(y_table->weight, 0.0, 0.02);
  torch::nn::init::normal_(t_mlp0->weight, 0.0, 0.02);
  torch::nn::init::normal_(t_mlp2->weight, 0.0, 0.02);
  for (auto& b : *blocks) {
    auto* block = b->as<DiTBlockImpl>();
    block->ada->weight.zero_();
    block->ada->bias.zero_();
  }
  final_ada->weight.zero_();
  final_ada->bias.zero_();
  final_linear->weight.zero_();
  final_linear->bias.zero_();
  if (final_conv) {  // starts as the identity: a plain DiT that learns to mend patch borders
    final_conv->weight.zero_();
    final_conv->bias.zero_();
  }
}

void DiTImpl::set_input_size(std::int64_t input_size, double base_grid) {
  if (input_size % config_.patch_size != 0)
    fail("DiT: input_size ", input_size, " is not a multiple of the patch size");
  config_.input_size = input_size;
  const auto grid = input_size / config_.patch_size;
  torch::NoGradGuard no_grad;
  pos_embed.set_data(sincos_pos_embed_2d(config_.hidden_size, grid, base_grid).unsqueeze(0).to(pos_embed.device()));
}

void DiTImpl::set_label_table(const torch::Tensor& table) {
  const std::int64_t null_rows = config_.class_dropout_prob > 0 ? 1 : 0;
  if (table.dim() != 2 || table.size(1) != config_.hidden_size || table.size(0) <= null_rows)
    fail("DiT: a label table must be [classes", null_rows ? " + 1" : "", ", ", config_.hidden_size, "], got ",
         table.sizes());
  config_.num_classes = table.size(0) - null_rows;
  torch::NoGradGuard no_grad;
  y_table->weight.set_data(table.detach().clone().to(y_table->weight.options()));
  y_table->options.num_embeddings(table.size(0));
}

std::int64_t DiTImpl::add_class(const torch::Tensor& row) {
  const std::int64_t k = config_.num_classes;
  const auto& old = y_table->weight;
  set_label_table(torch::cat(
      {old.narrow(0, 0, k).detach(), row.to(old.options()).view({1, -1}), old.narrow(0, k, old.size(0) - k).detach()}));
  return k;
}

torch::Tensor DiTImpl::unpatchify(const torch::Tensor& x) const {
  const auto c = config_.out_channels(), p = config_.patch_size;
  const auto h = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(x.size(1)))));
  return x.reshape({x.size(0), h, h, p, p, c}).permute({0, 5, 1, 3, 2, 4}).reshape({x.size(0), c, h * p, h * p});
}

torch::Tensor DiTImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y) {
  if (x.dim() != 4 || x.size(1) != config_.in_channels || x.size(2) != config_.input_size ||
      x.size(3) != config_.input_size)
    fail("DiT expects input [N, ", config_.in_channels, ", ", config_.input_size, ", ", config_.input_size, "], got ",
         x.sizes());
  const LayerHooks& hk = *hooks_;
  auto h = hk.conv2d(*x_proj, x).flatten(2).transpose(1, 2) + pos_embed;  // [N, T, D]
  auto temb =
      hk.linear(*t_mlp2, torch::silu(hk.linear(*t_mlp0, timestep_embedding(t, 256, config_.timestep_freq_shift))));
  auto c = temb + y_table->forward(y);  // [N, D]
  for (auto& b : *blocks) h = b->as<DiTBlockImpl>()->forward(h, c);
  auto mod = hk.linear(*final_ada, torch::silu(c)).chunk(2, 1);
  h = hk.linear(*final_linear, modulate(layer_norm(h), mod[0], mod[1]));  // [N, T, p*p*C]
  auto out = unpatchify(h);
  if (final_conv) out = out + hk.conv2d(*final_conv, out);
  return out;
}

torch::Tensor DiTImpl::forward_with_cfg(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                                        double scale) {
  const auto n = x.size(0);
  auto out = forward(torch::cat({x, x}), torch::cat({t, t}), torch::cat({y, torch::full_like(y, null_class())}));
  auto cond = out.narrow(0, 0, n), uncond = out.narrow(0, n, n);
  const auto c = config_.in_channels;
  auto eps = uncond.narrow(1, 0, c) + scale * (cond.narrow(1, 0, c) - uncond.narrow(1, 0, c));
  if (!config_.learn_sigma) return eps;
  return torch::cat({eps, cond.narrow(1, c, c)}, 1);
}

torch::Tensor DiTImpl::drop_labels(const torch::Tensor& y, const torch::Tensor& uniform) const {
  return torch::where(uniform < config_.class_dropout_prob, torch::full_like(y, null_class()), y);
}

}  // namespace atelier
