// Ref: openai/CLIP@0845fc462666c43bda82243874b66a0071464510 clip/model.py (text tower, initialisation,
// parameter paths); the image tower is the Shapes probe's CNN (eval/probe.cpp) instead of a ResNet/ViT.
#include "eval/clip.h"

#include <cctype>
#include <cmath>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/training_state.h"
#include "data/shapes.h"

namespace atelier {
namespace {

namespace F = torch::nn::functional;

bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}

// Appends conv-norm-SiLU x2 (+ 2x2 average pool) to `s`, as the probe's stages.
void add_stage(torch::nn::Sequential& s, std::int64_t in, std::int64_t out, bool pool) {
  const std::int64_t groups = std::min<std::int64_t>(8, out / 2);
  s->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)));
  s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, out)));
  s->push_back(torch::nn::SiLU());
  s->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)));
  s->push_back(torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, out)));
  s->push_back(torch::nn::SiLU());
  if (pool) s->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2)));
}

std::string replace_braces(const std::string& prompt_template, const std::string& name) {
  const auto at = prompt_template.find("{}");
  if (at == std::string::npos) fail("prompt template '", prompt_template, "' has no '{}' for the class name");
  return prompt_template.substr(0, at) + name + prompt_template.substr(at + 2);
}

}  // namespace

// --- tokenizer ---

ClipTokenizer::ClipTokenizer(std::vector<std::string> vocabulary, std::int64_t context_length)
    : vocabulary_(std::move(vocabulary)), context_length_(context_length) {
  const std::vector<std::string> special = {"<pad>", "<unk>", "<sot>", "<eot>"};
  if (vocabulary_.size() < special.size() || !std::equal(special.begin(), special.end(), vocabulary_.begin()))
    fail("CLIP vocabulary must start with <pad>, <unk>, <sot>, <eot>");
  if (context_length_ < 3) fail("CLIP context length ", context_length_, " leaves no room for a word");
  for (std::size_t i = 0; i < vocabulary_.size(); ++i)
    if (!ids_.emplace(vocabulary_[i], static_cast<std::int64_t>(i)).second)
      fail("CLIP vocabulary lists '", vocabulary_[i], "' twice");
}

const std::vector<std::string>& ClipTokenizer::shapes_vocabulary() {
  static const std::vector<std::string> vocabulary = [] {
    std::vector<std::string> v = {"<pad>", "<unk>", "<sot>", "<eot>",
                                  // caption words (Attributes::caption) and punctuation
                                  "a", "on", "background", "style", "glyph", ",", ".", "small", "medium", "large",
                                  "plain", "two-tone", "gradient",
                                  // prompt words
                                  "an", "the", "of", "photo", "image", "picture", "shape"};
    for (const auto* names :
         {&shapes::shape_names(), &shapes::glyph_names(), &shapes::color_names(), &shapes::style_names()})
      v.insert(v.end(), names->begin(), names->end());
    return v;
  }();
  return vocabulary;
}

std::vector<std::string> ClipTokenizer::words(const std::string& text) const {
  std::vector<std::string> out;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
    if (std::isspace(static_cast<unsigned char>(c))) {
      flush();
    } else if (is_word_char(c) || (c == '-' && !word.empty() && i + 1 < text.size() && is_word_char(text[i + 1])) ||
               (static_cast<unsigned char>(c) >= 0x80)) {
      word += c;  // bytes of UTF-8 letters stay inside a word (and make it <unk>)
    } else {
      flush();
      out.emplace_back(1, c);
    }
  }
  flush();
  return out;
}

std::int64_t ClipTokenizer::id(const std::string& word) const {
  auto it = ids_.find(word);
  return it == ids_.end() ? kUnk : it->second;
}

std::vector<std::int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<std::int64_t> out;
  for (const auto& w : words(text)) out.push_back(id(w));
  return out;
}

torch::Tensor ClipTokenizer::tokenize(const std::vector<std::string>& texts) const {
  auto out = torch::full({static_cast<std::int64_t>(texts.size()), context_length_}, kPad, torch::kLong);
  auto a = out.accessor<std::int64_t, 2>();
  for (std::size_t m = 0; m < texts.size(); ++m) {
    const auto ids = encode(texts[m]);
    if (static_cast<std::int64_t>(ids.size()) + 2 > context_length_)
      fail("text '", texts[m], "' has ", ids.size(), " tokens; the CLIP context holds ", context_length_ - 2);
    const auto row = static_cast<std::int64_t>(m);
    a[row][0] = kSot;
    for (std::size_t i = 0; i < ids.size(); ++i) a[row][static_cast<std::int64_t>(i) + 1] = ids[i];
    a[row][static_cast<std::int64_t>(ids.size()) + 1] = kEot;
  }
  return out;
}

std::string ClipTokenizer::decode(const torch::Tensor& ids) const {
  std::string out;
  const auto flat = ids.to(torch::kCPU, torch::kLong).contiguous();
  const auto* p = flat.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < flat.numel(); ++i) {
    if (p[i] == kSot || p[i] == kPad) continue;
    if (p[i] == kEot) break;
    const std::string& w = p[i] >= 0 && p[i] < static_cast<std::int64_t>(vocabulary_.size())
                               ? vocabulary_[static_cast<std::size_t>(p[i])]
                               : vocabulary_[kUnk];
    const bool punct = w.size() == 1 && !is_word_char(w[0]);
    if (!out.empty() && !punct) out += ' ';
    out += w;
  }
  return out;
}

// --- modules ---

ClipAttentionImpl::ClipAttentionImpl(std::int64_t width, std::int64_t heads) : heads_(heads) {
  if (width % heads != 0) fail("CLIP transformer width ", width, " is not divisible by ", heads, " heads");
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
  in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * width}));
  out_proj = register_module("out_proj", torch::nn::Linear(width, width));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x) {
  const auto m = x.size(0), l = x.size(1), w = x.size(2);
  auto qkv = F::linear(x, in_proj_weight, in_proj_bias).view({m, l, 3, heads_, w / heads_});       // [M, L, 3, H, dh]
  qkv = qkv.permute({2, 0, 3, 1, 4});                                                              // [3, M, H, L, dh]
  auto a = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], {}, 0.0, /*is_causal=*/true);  // [M, H, L, dh]
  return out_proj->forward(a.transpose(1, 2).reshape({m, l, w}));
}

ClipResidualBlockImpl::ClipResidualBlockImpl(std::int64_t width, std::int64_t heads) {
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
  attn = register_module("attn", ClipAttention(width, heads));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
  c_fc = torch::nn::Linear(width, 4 * width);
  c_proj = torch::nn::Linear(4 * width, width);
  auto quick_gelu = [](const torch::Tensor& t) { return t * torch::sigmoid(1.702 * t); };
  mlp = register_module(
      "mlp", torch::nn::Sequential({{"c_fc", c_fc}, {"gelu", torch::nn::Functional(quick_gelu)}, {"c_proj", c_proj}}));
}

torch::Tensor ClipResidualBlockImpl::forward(const torch::Tensor& x) {
  auto h = x + attn->forward(ln_1->forward(x));
  return h + mlp->forward(ln_2->forward(h));
}

ClipTransformerImpl::ClipTransformerImpl(std::int64_t width, std::int64_t layers, std::int64_t heads) {
  resblocks = register_module("resblocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < layers; ++i) resblocks->push_back(ClipResidualBlock(width, heads));
}

torch::Tensor ClipTransformerImpl::forward(torch::Tensor x) {
  for (const auto& block : *resblocks) x = block->as<ClipResidualBlock>()->forward(x);
  return x;
}

ClipVisualImpl::ClipVisualImpl(std::int64_t width, std::int64_t embed_dim) {
  torch::nn::Sequential f;
  add_stage(f, 3, width, true);
  add_stage(f, width, 2 * width, true);
  add_stage(f, 2 * width, 4 * width, false);
  features = register_module("features", f);
  ln_post = register_module("ln_post", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4 * width})));
  proj = register_parameter("proj", torch::randn({4 * width, embed_dim}) * std::pow(4.0 * width, -0.5));
}

torch::Tensor ClipVisualImpl::forward(const torch::Tensor& x) {
  auto f = features->forward(x).mean({2, 3});  // [N, 4w]
  return ln_post->forward(f).mm(proj);         // [N, D]
}

ClipModelImpl::ClipModelImpl(const ClipConfig& config, std::vector<std::string> vocabulary)
    : config_(config), tokenizer_(std::move(vocabulary), config.context_length) {
  const auto w = config.transformer_width, layers = config.transformer_layers;
  visual = register_module("visual", ClipVisual(config.vision_width, config.embed_dim));
  transformer = register_module("transformer", ClipTransformer(w, layers, config.transformer_heads));
  const auto vocab = static_cast<std::int64_t>(tokenizer_.vocabulary().size());
  token_embedding = register_module("token_embedding", torch::nn::Embedding(vocab, w));
  positional_embedding = register_parameter("positional_embedding", torch::empty({config.context_length, w}));
  ln_final = register_module("ln_final", torch::nn::LayerNorm(torch::nn::LayerNormOptions({w})));
  text_projection = register_parameter("text_projection", torch::empty({w, config.embed_dim}));
  logit_scale = register_parameter("logit_scale", torch::full({}, std::log(1 / 0.07)));

  // CLIP.initialize_parameters
  torch::NoGradGuard no_grad;
  const double proj_std = std::pow(static_cast<double>(w), -0.5) * std::pow(2.0 * layers, -0.5);
  const double attn_std = std::pow(static_cast<double>(w), -0.5), fc_std = std::pow(2.0 * w, -0.5);
  torch::nn::init::normal_(token_embedding->weight, 0, 0.02);
  torch::nn::init::normal_(positional_embedding, 0, 0.01);
  for (const auto& m : *transformer->resblocks) {
    auto block = m->as<ClipResidualBlock>();
    torch::nn::init::normal_(block->attn->in_proj_weight, 0, attn_std);
    torch::nn::init::normal_(block->attn->out_proj->weight, 0, proj_std);
    torch::nn::init::zeros_(block->attn->out_proj->bias);
    torch::nn::init::normal_(block->c_fc->weight, 0, fc_std);
    torch::nn::init::normal_(block->c_proj->weight, 0, proj_std);
  }
  torch::nn::init::normal_(text_projection, 0, attn_std);
}

torch::Tensor ClipModelImpl::resized(const torch::Tensor& x) const {
  const std::int64_t s = config_.image_size;
  if (x.size(2) == s && x.size(3) == s) return x;
  auto o = F::InterpolateFuncOptions().size(std::vector<std::int64_t>{s, s});
  if (x.size(2) >= s && x.size(3) >= s) return F::interpolate(x, o.mode(torch::kArea));
  return F::interpolate(x, o.mode(torch::kBilinear).align_corners(false));
}

torch::Tensor ClipModelImpl::encode_image(const torch::Tensor& images) {
  if (images.dim() != 4 || images.size(1) != 3) fail("CLIP encode_image: expected [N, 3, H, W], got ", images.sizes());
  return F::normalize(visual->forward(resized(images)), F::NormalizeFuncOptions().dim(1));
}

torch::Tensor ClipModelImpl::encode_embedded(const torch::Tensor& x, const torch::Tensor& eot) {
  auto h = ln_final->forward(transformer->forward(x + positional_embedding));            // [M, L, W]
  auto f = h.index({torch::arange(h.size(0), eot.options()), eot}).mm(text_projection);  // [M, D]
  return F::normalize(f, F::NormalizeFuncOptions().dim(1));
}

torch::Tensor ClipModelImpl::encode_text(const torch::Tensor& token_ids) {
  if (token_ids.dim() != 2 || token_ids.size(1) != config_.context_length)
    fail("CLIP encode_text: expected token ids [M, ", config_.context_length, "], got ", token_ids.sizes());
  auto is_eot = token_ids.eq(ClipTokenizer::kEot);
  if (!is_eot.any(1).all().item<bool>()) fail("CLIP encode_text: a row of token ids has no <eot>");
  auto eot = is_eot.to(torch::kInt).argmax(1);  // first <eot> of each row
  return encode_embedded(token_embedding->forward(token_ids), eot);
}

torch::Tensor ClipModelImpl::encode_text_with_context(const torch::Tensor& context,
                                                      const std::vector<std::vector<std::int64_t>>& class_token_ids) {
  const auto k = static_cast<std::int64_t>(class_token_ids.size()), w = config_.transformer_width;
  const auto l = config_.context_length;
  if (context.dim() < 2 || context.dim() > 3 || context.size(-1) != w || (context.dim() == 3 && context.size(0) != k))
    fail("CLIP context: expected [n_ctx, ", w, "] or [", k, ", n_ctx, ", w, "], got ", context.sizes());
  const auto n_ctx = context.size(-2);
  const auto ids_options = torch::TensorOptions().dtype(torch::kLong).device(context.device());
  auto embed = [&](std::vector<std::int64_t> ids) {
    return token_embedding->forward(torch::tensor(ids, torch::kLong).to(ids_options.device()));
  };
  const auto special = embed({ClipTokenizer::kSot, ClipTokenizer::kEot, ClipTokenizer::kPad});  // [3, W]
  std::vector<torch::Tensor> rows;
  std::vector<std::int64_t> eot;
  for (std::int64_t c = 0; c < k; ++c) {
    const auto& name = class_token_ids[static_cast<std::size_t>(c)];
    const auto used = 2 + n_ctx + static_cast<std::int64_t>(name.size());
    if (used > l) fail("CLIP prompt of class ", c, ": ", used, " tokens, more than the context length ", l);
    std::vector<torch::Tensor> parts = {special.slice(0, 0, 1), context.dim() == 3 ? context[c] : context};
    if (!name.empty()) parts.push_back(embed(name));
    parts.push_back(special.slice(0, 1, 2));
    parts.push_back(special.slice(0, 2, 3).expand({l - used, w}));
    rows.push_back(torch::cat(parts, 0));  // [L, W]
    eot.push_back(used - 1);
  }
  return encode_embedded(torch::stack(rows), torch::tensor(eot, ids_options));  // [K, D]
}

torch::Tensor ClipModelImpl::initial_context(const std::string& phrase) {
  torch::NoGradGuard no_grad;
  const auto ids = tokenizer_.encode(phrase);
  if (ids.empty()) fail("CLIP initial context: '", phrase, "' has no words");
  auto index = torch::tensor(ids, torch::kLong).to(token_embedding->weight.device());
  return token_embedding->weight.index_select(0, index).clone();  // [n_words, W]
}

std::vector<std::vector<std::int64_t>> ClipModelImpl::class_token_ids(
    const std::vector<std::string>& class_names) const {
  std::vector<std::vector<std::int64_t>> out;
  for (const auto& name : class_names) out.push_back(tokenizer_.encode(name));
  return out;
}

torch::Tensor ClipModelImpl::logit_scale_exp() const {
  return logit_scale.clamp_max(std::log(100.0)).exp();
}

torch::Tensor ClipModelImpl::zero_shot_logits(const torch::Tensor& images, const std::vector<std::string>& class_names,
                                              const std::string& prompt_template) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> prompts;
  for (const auto& name : class_names) prompts.push_back(replace_braces(prompt_template, name));
  const auto device = token_embedding->weight.device();
  const auto text = encode_text(tokenizer_.tokenize(prompts).to(device));  // [K, D]
  const auto scale = logit_scale_exp();
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < images.size(0); i += 256) {
    auto x = images.slice(0, i, std::min(images.size(0), i + 256)).to(device);
    out.push_back(scale * encode_image(x).mm(text.t()));  // [n, K]
  }
  return torch::cat(out, 0);
}

// --- files ---

void save_clip(const std::filesystem::path& path, ClipModel& model, const Metadata& extra) {
  Metadata meta = extra;
  meta["atelier.kind"] = "shapes_clip";
  meta["clip.config"] = json_text(to_json(model->config()));
  meta["clip.vocabulary"] = json_text(model->tokenizer().vocabulary());
  safetensors::save(path, module_tensors(*model), meta);
}

ClipModel load_clip(const std::filesystem::path& path) {
  const std::string what = path.string();
  if (!std::filesystem::exists(path)) fail(what, ": CLIP model file does not exist");
  TensorFile f = safetensors::load(path);
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(what, ": not a Shapes CLIP model (metadata '", key, "' missing)");
    return it->second;
  };
  if (meta("atelier.kind") != "shapes_clip")
    fail(what, ": not a Shapes CLIP model (kind '", meta("atelier.kind"), "', expected 'shapes_clip')");
  const auto config =
      with_context([&] { return from_json<ClipConfig>(parse_json(meta("clip.config"), what)); }, what, ": clip.config");
  auto vocabulary =
      string_list(parse_json(meta("clip.vocabulary"), what + ": clip.vocabulary"), what + ": clip.vocabulary");
  ClipModel model = with_context([&] { return ClipModel(config, std::move(vocabulary)); }, what);
  load_module_tensors(*model, f.tensors, "", what);
  model->eval();
  return model;
}

double zero_shot_accuracy(ClipModel& model, const torch::Tensor& images, const torch::Tensor& labels,
                          const std::vector<std::string>& class_names, const std::string& prompt_template) {
  if (images.size(0) == 0) return 0;
  auto predicted = model->zero_shot_logits(images, class_names, prompt_template).argmax(1).cpu();
  return predicted.eq(labels.cpu()).to(torch::kDouble).mean().item<double>();
}

}  // namespace atelier
