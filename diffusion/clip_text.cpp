// Ref: huggingface/transformers@v5.24.0 src/transformers/models/clip/modeling_clip.py (CLIPTextEmbeddings,
// CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPTextModel), activations.py (QuickGELUActivation);
// huggingface/diffusers@v0.42.1 src/diffusers/loaders/single_file_utils.py (convert_ldm_clip_checkpoint,
// convert_open_clip_checkpoint, SD_2_TEXT_ENCODER_KEYS_TO_IGNORE).
#include "diffusion/clip_text.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>
#include <string_view>

#include "core/error.h"
#include "core/tensor_io.h"
#include "core/training_state.h"
#include "core/translated_load.h"

namespace atelier {
namespace nn = torch::nn;

ClipTextConfig clip_text_preset(const std::string& name) {
  ClipTextConfig c;
  if (name == "sd15") return c;
  if (name == "sd21") {
    c.hidden_size = 1024;
    c.intermediate_size = 4096;
    c.num_hidden_layers = 23;
    c.num_attention_heads = 16;
    c.hidden_act = "gelu";
    return c;
  }
  std::string list;
  for (const auto& n : clip_text_preset_names()) list += (list.empty() ? "" : ", ") + n;
  fail("unknown CLIP text preset '", name, "' (known: ", list, ")");
}

std::vector<std::string> clip_text_preset_names() {
  return {"sd15", "sd21"};
}

ClipTextConfig read_clip_text_config(const std::filesystem::path& config_json) {
  json j = load_json_file(config_json);
  if (j.is_object() && j.contains("text_config")) j = j["text_config"];
  if (!j.is_object()) fail(config_json.string(), ": not a JSON object");
  if (auto t = j.find("model_type"); t != j.end() && t->is_string() && *t != "clip_text_model")
    fail(config_json.string(), ": model_type '", t->get<std::string>(), "', expected 'clip_text_model'");
  json known = json::object();
  const json fields = to_json(ClipTextConfig{});
  for (const auto& [key, _] : fields.items())
    if (auto v = j.find(key); v != j.end() && !v->is_null()) known[key] = *v;
  return with_context([&] { return from_json<ClipTextConfig>(known); }, config_json.string());
}

ClipTextAttentionImpl::ClipTextAttentionImpl(std::int64_t dim, std::int64_t n_heads) : heads(n_heads) {
  q_proj = register_module("q_proj", nn::Linear(dim, dim));
  k_proj = register_module("k_proj", nn::Linear(dim, dim));
  v_proj = register_module("v_proj", nn::Linear(dim, dim));
  out_proj = register_module("out_proj", nn::Linear(dim, dim));
}

torch::Tensor ClipTextAttentionImpl::forward(const torch::Tensor& x) {
  const auto n = x.size(0), t = x.size(1), d = x.size(2);
  auto split = [&](const torch::Tensor& y) { return y.view({n, t, heads, d / heads}).transpose(1, 2); };
  auto q = split(q_proj->forward(x)), k = split(k_proj->forward(x)), v = split(v_proj->forward(x));  // [N, H, T, Dh]
  auto a = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
  return out_proj->forward(a.transpose(1, 2).reshape({n, t, d}));  // [N, T, D]
}

ClipTextMLPImpl::ClipTextMLPImpl(std::int64_t dim, std::int64_t hidden, bool quick) : quick_gelu(quick) {
  fc1 = register_module("fc1", nn::Linear(dim, hidden));
  fc2 = register_module("fc2", nn::Linear(hidden, dim));
}

torch::Tensor ClipTextMLPImpl::forward(const torch::Tensor& x) {
  auto h = fc1->forward(x);
  h = quick_gelu ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
  return fc2->forward(h);
}

ClipTextEncoderLayerImpl::ClipTextEncoderLayerImpl(const ClipTextConfig& c) {
  auto norm = [&] { return nn::LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)); };
  self_attn = register_module("self_attn", ClipTextAttention(c.hidden_size, c.num_attention_heads));
  layer_norm1 = register_module("layer_norm1", norm());
  mlp = register_module("mlp", ClipTextMLP(c.hidden_size, c.intermediate_size, c.hidden_act == "quick_gelu"));
  layer_norm2 = register_module("layer_norm2", norm());
}

torch::Tensor ClipTextEncoderLayerImpl::forward(const torch::Tensor& x) {
  auto h = x + self_attn->forward(layer_norm1->forward(x));
  return h + mlp->forward(layer_norm2->forward(h));
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) : config_(c) {
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    fail("ClipTextModel: hidden_act '", c.hidden_act, "' is not supported (quick_gelu, gelu)");
  if (c.hidden_size % c.num_attention_heads != 0)
    fail("ClipTextModel: hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ",
         c.num_attention_heads);
  auto text_model = register_module("text_model", std::make_shared<nn::Module>());
  auto embeddings = text_model->register_module("embeddings", std::make_shared<nn::Module>());
  token_embedding = embeddings->register_module("token_embedding", nn::Embedding(c.vocab_size, c.hidden_size));
  position_embedding =
      embeddings->register_module("position_embedding", nn::Embedding(c.max_position_embeddings, c.hidden_size));
  auto encoder = text_model->register_module("encoder", std::make_shared<nn::Module>());
  layers = encoder->register_module("layers", nn::ModuleList());
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipTextEncoderLayer(c));
  final_layer_norm = text_model->register_module(
      "final_layer_norm", nn::LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

torch::Tensor ClipTextModelImpl::forward(const torch::Tensor& ids, std::int64_t skip) {
  const auto& c = config_;
  if (ids.dim() != 2 || ids.scalar_type() != torch::kLong || ids.size(1) < 1 || ids.size(1) > c.max_position_embeddings)
    fail("ClipTextModel: expected int64 ids [N, T] with 1 <= T <= ", c.max_position_embeddings, ", got ",
         ids.scalar_type(), " ", ids.sizes());
  if (ids.numel() > 0 && (ids.min().item<std::int64_t>() < 0 || ids.max().item<std::int64_t>() >= c.vocab_size))
    fail("ClipTextModel: token ids must lie in [0, ", c.vocab_size, "), got [", ids.min().item<std::int64_t>(), ", ",
         ids.max().item<std::int64_t>(), "]");
  if (skip < 0 || skip >= c.num_hidden_layers)
    fail("ClipTextModel: skip ", skip, " must lie in [0, ", c.num_hidden_layers, ")");
  const auto t = ids.size(1);
  auto positions = torch::arange(t, ids.options());
  auto h = token_embedding->forward(ids) + position_embedding->forward(positions);  // [N, T, D]
  const auto run = c.num_hidden_layers - skip;
  for (std::int64_t i = 0; i < run; ++i) h = layers->at<ClipTextEncoderLayerImpl>(i).forward(h);
  return final_layer_norm->forward(h);
}

ClipTextOutput ClipTextModelImpl::encode(const torch::Tensor& ids, std::int64_t skip) {
  ClipTextOutput out;
  out.hidden = forward(ids, skip);
  auto at = config_.eos_token_id == 2 ? ids.argmax(1) : ids.eq(config_.eos_token_id).to(torch::kInt).argmax(1);  // [N]
  out.pooled = out.hidden.index({torch::arange(ids.size(0), at.options()), at});  // [N, D]
  return out;
}

torch::Tensor clip_token_tensor(const std::vector<std::vector<std::int32_t>>& rows) {
  if (rows.empty()) return torch::empty({0, 0}, torch::kLong);
  const auto t = static_cast<std::int64_t>(rows.front().size());
  auto out = torch::empty({static_cast<std::int64_t>(rows.size()), t}, torch::kLong);
  auto a = out.accessor<std::int64_t, 2>();
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (static_cast<std::int64_t>(rows[r].size()) != t)
      fail("clip_token_tensor: row ", r, " has ", rows[r].size(), " ids, row 0 has ", t);
    for (std::int64_t j = 0; j < t; ++j) a[static_cast<std::int64_t>(r)][j] = rows[r][static_cast<std::size_t>(j)];
  }
  return out;
}

// ---- key dialects ---------------------------------------------------------------------------------

namespace {

constexpr std::string_view kLDMPrefix = "cond_stage_model.transformer.";
constexpr std::string_view kOpenCLIPPrefix = "cond_stage_model.model.";

// OpenCLIP (SD2 single file) -> transformers, after "cond_stage_model.model.". Block-level names are
// relative to "transformer.resblocks.N." -> "text_model.encoder.layers.N.".
struct Rename {
  std::string_view from, to;
};
constexpr Rename kOpenCLIPTop[] = {
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"ln_final.weight", "text_model.final_layer_norm.weight"},
    {"ln_final.bias", "text_model.final_layer_norm.bias"},
};
constexpr Rename kOpenCLIPBlock[] = {
    {"ln_1.", "layer_norm1."},
    {"ln_2.", "layer_norm2."},
    {"mlp.c_fc.", "mlp.fc1."},
    {"mlp.c_proj.", "mlp.fc2."},
    {"attn.out_proj.", "self_attn.out_proj."},
};
constexpr std::string_view kOpenCLIPUnused[] = {"text_projection", "logit_scale"};

std::optional<std::int64_t> index_of(std::string_view s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

struct Translated {
  TensorMap tensors;                          // transformers names
  std::map<std::string, std::string> origin;  // transformers name -> file name, where they differ
  ClipTextKeyDialect dialect = ClipTextKeyDialect::Transformers;
  std::int64_t openclip_blocks = 0;  // resblocks in an OpenCLIP file
};

Translated translate(const TensorMap& file, std::int64_t num_layers) {
  TensorMap state = tensors_under(file, "state_dict.");
  const std::string outer = state.empty() ? "" : "state_dict.";
  if (state.empty()) state = file;
  Translated out;
  auto add = [&](const std::string& name, torch::Tensor t, const std::string& file_key) {
    if (name.ends_with("embeddings.position_ids")) return;  // non-persistent buffer older files saved
    if (name != file_key) out.origin[name] = file_key;
    if (!out.tensors.emplace(name, std::move(t)).second)
      fail("CLIP text weights: '", file_key, "' and another key both map to '", name, "'");
  };

  if (TensorMap ldm = tensors_under(state, kLDMPrefix); !ldm.empty()) {
    out.dialect = ClipTextKeyDialect::LDM;
    for (auto& [k, v] : ldm) add(k, v, outer + std::string(kLDMPrefix) + k);
    return out;
  }
  if (TensorMap oc = tensors_under(state, kOpenCLIPPrefix); !oc.empty()) {
    out.dialect = ClipTextKeyDialect::OpenCLIP;
    const std::string prefix = outer + std::string(kOpenCLIPPrefix);
    for (auto& [k, v] : oc) {
      const std::string file_key = prefix + k;
      if (std::find(std::begin(kOpenCLIPUnused), std::end(kOpenCLIPUnused), k) != std::end(kOpenCLIPUnused)) continue;
      bool done = false;
      for (const auto& r : kOpenCLIPTop) {
        if (k == r.from) add(std::string(r.to), v, file_key), done = true;
      }
      constexpr std::string_view blocks = "transformer.resblocks.";
      if (!done && k.starts_with(blocks)) {
        const auto rest = std::string_view(k).substr(blocks.size());
        const auto dot = rest.find('.');
        const auto index = index_of(rest.substr(0, dot));
        if (index && dot != std::string_view::npos) {
          out.openclip_blocks = std::max(out.openclip_blocks, *index + 1);
          done = true;
          if (*index >= num_layers) continue;  // SD2 files hold one block more than diffusers' 23
          const std::string layer = "text_model.encoder.layers." + std::to_string(*index) + ".";
          const auto tail = rest.substr(dot + 1);
          if (tail == "attn.in_proj_weight" || tail == "attn.in_proj_bias") {
            const char* kind = tail.ends_with("weight") ? "weight" : "bias";
            if (v.size(0) % 3 != 0)
              fail("CLIP text weights: '", file_key, "' has shape ", v.sizes(), ", first dimension not 3 x width");
            auto qkv = v.chunk(3, 0);
            const char* names[] = {"q_proj.", "k_proj.", "v_proj."};
            for (int i = 0; i < 3; ++i) add(layer + "self_attn." + names[i] + kind, qkv[i], file_key);
            continue;
          }
          std::string name = layer + std::string(tail);
          for (const auto& r : kOpenCLIPBlock) {
            if (tail.starts_with(r.from)) {
              name = layer + std::string(r.to) + std::string(tail.substr(r.from.size()));
              break;
            }
          }
          add(name, v, file_key);
        }
      }
      if (!done) add(k, v, file_key);
    }
    return out;
  }
  // transformers: "text_model." as stored by transformers 4 and diffusers; transformers 5 omits it.
  bool unprefixed = false;
  for (const auto& [k, _] : state) unprefixed |= k.starts_with("embeddings.") || k.starts_with("encoder.layers.");
  for (const auto& [k, v] : state) {
    const bool bare =
        unprefixed && (k.starts_with("embeddings.") || k.starts_with("encoder.") || k.starts_with("final_layer_norm."));
    add(bare ? "text_model." + k : k, v, outer + k);
  }
  return out;
}

const torch::Tensor* find(const TensorMap& t, const std::string& key) {
  auto it = t.find(key);
  return it == t.end() ? nullptr : &it->second;
}

}  // namespace

const char* dialect_name(ClipTextKeyDialect d) {
  switch (d) {
    case ClipTextKeyDialect::Transformers: return "transformers";
    case ClipTextKeyDialect::LDM: return "LDM";
    case ClipTextKeyDialect::OpenCLIP: return "OpenCLIP";
  }
  return "?";
}

TensorMap clip_text_tensors_to_transformers(const TensorMap& tensors, std::int64_t num_layers,
                                            ClipTextKeyDialect* detected) {
  Translated t = translate(tensors, num_layers);
  if (detected) *detected = t.dialect;
  return std::move(t.tensors);
}

void load_clip_text_state(ClipTextModelImpl& model, const TensorMap& tensors, const std::string& source) {
  Translated t = translate(tensors, model.config().num_hidden_layers);
  load_translated_tensors(model, t.tensors, t.origin, source + " (" + dialect_name(t.dialect) + " names)");
}

ClipTextConfig detect_clip_text_config(const TensorMap& tensors, const ClipTextConfig& base) {
  const Translated t = translate(tensors, std::numeric_limits<std::int64_t>::max());
  const TensorMap& w = t.tensors;
  auto require = [&](const std::string& key) -> const torch::Tensor& {
    const torch::Tensor* p = find(w, key);
    if (!p) fail("CLIP text weights (", dialect_name(t.dialect), " names): no '", key, "'; not a CLIP text encoder");
    if (p->dim() != 2) fail("CLIP text weights: '", key, "' has shape ", p->sizes(), ", expected 2 dimensions");
    return *p;
  };
  ClipTextConfig c = base;
  const auto& tokens = require("text_model.embeddings.token_embedding.weight");  // [V, D]
  c.vocab_size = tokens.size(0);
  c.hidden_size = tokens.size(1);
  c.max_position_embeddings = require("text_model.embeddings.position_embedding.weight").size(0);
  c.intermediate_size = require("text_model.encoder.layers.0.mlp.fc1.weight").size(0);
  c.num_hidden_layers = 0;
  while (find(w, "text_model.encoder.layers." + std::to_string(c.num_hidden_layers) + ".mlp.fc1.weight"))
    ++c.num_hidden_layers;
  c.num_attention_heads = std::max<std::int64_t>(1, c.hidden_size / 64);
  if (t.dialect == ClipTextKeyDialect::LDM) c.hidden_act = "quick_gelu", c.eos_token_id = 2;
  if (t.dialect == ClipTextKeyDialect::OpenCLIP) {
    c.hidden_act = "gelu", c.eos_token_id = 2;
    if (c.num_hidden_layers > 1) --c.num_hidden_layers;  // diffusers' SD2 text encoder: 23 of 24 blocks
  }
  return c;
}

ClipTextModel load_clip_text(const std::filesystem::path& path, const ClipTextConfig& base) {
  TensorFile file = load_tensor_file(path);
  // A transformers config.json beside the weights (diffusers' text_encoder/ folder) decides the config;
  // any other file there (a UNet's config, say) is not ours.
  const auto config_path = path.parent_path() / "config.json";
  std::error_code ec;
  bool has_config = false;
  if (std::filesystem::is_regular_file(config_path, ec)) {
    const json j = load_json_file(config_path);
    const auto type = j.is_object() ? j.value("model_type", std::string()) : std::string();
    has_config = type == "clip_text_model" || type == "clip";
  }
  ClipTextModel model(has_config ? read_clip_text_config(config_path) : detect_clip_text_config(file.tensors, base));
  load_clip_text_state(*model, file.tensors, path.string());
  model->eval();
  return model;
}

}  // namespace atelier
