// CLIP text encoder (Radford et al., 2021) as Stable Diffusion uses it: token + position embeddings, a
// pre-LayerNorm causal transformer, a final LayerNorm. SD1 conditions on CLIP ViT-L/14's text tower
// (768 wide, 12 layers, quick_gelu); SD2 on OpenCLIP ViT-H's (1024 wide, gelu), of which diffusers keeps
// 23 of 24 layers (the penultimate layer's output).
// Ref: huggingface/transformers@v5.24.0 src/transformers/models/clip/{modeling_clip.py, configuration_clip.py}
//      (CLIPTextModel), huggingface/diffusers@v0.42.1 src/diffusers/loaders/single_file_utils.py
//      (convert_open_clip_checkpoint), pipelines/stable_diffusion/pipeline_stable_diffusion.py (clip_skip).
// Parameter paths equal transformers' CLIPTextModel keys as checkpoints store them
// (text_model.embeddings.token_embedding.weight, text_model.encoder.layers.N.self_attn.q_proj.weight,
// text_model.final_layer_norm.bias, ...), so a diffusers text_encoder/ file loads 1:1. The LDM single-file
// names (SD1 "cond_stage_model.transformer.", SD2 OpenCLIP "cond_stage_model.model.") are translated by
// load_clip_text_state.
//
//   auto tok = ClipBPETokenizer::load(".../bpe_simple_vocab_16e6.txt.gz");
//   ClipTextModel te = load_clip_text("text_encoder/model.safetensors");  // config.json beside it
//   auto ids = clip_token_tensor(tok.tokenize({"a photo of a cat"}));     // [1, 77] int64
//   auto cond = te->forward(ids);                                        // [1, 77, 768]
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor_map.h"

namespace atelier {

struct ClipTextConfig {
  std::int64_t vocab_size = 49408;
  std::int64_t hidden_size = 768;
  std::int64_t intermediate_size = 3072;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;
  // Pooling position: the legacy value 2 (SD1's config) pools at argmax(ids) (the <|endoftext|> id is the
  // largest); any other value pools at the first position holding eos_token_id.
  std::int64_t eos_token_id = 2;

  template <class V>
  void fields(V& v) {
    v("vocab_size", vocab_size, "token embedding rows", Range{1, 1e7});
    v("hidden_size", hidden_size, "width D", Range{1, 65536});
    v("intermediate_size", intermediate_size, "MLP hidden width", Range{1, 262144});
    v("num_hidden_layers", num_hidden_layers, "transformer layers", Range{1, 256});
    v("num_attention_heads", num_attention_heads, "attention heads (must divide hidden_size)", Range{1, 1024});
    v("max_position_embeddings", max_position_embeddings, "positions (context length)", Range{1, 65536});
    v("hidden_act", hidden_act, "MLP activation", Choices{"quick_gelu", "gelu"});
    v("layer_norm_eps", layer_norm_eps, "LayerNorm epsilon", Range{0, 1});
    v("eos_token_id", eos_token_id, "pooling token id (2: argmax of the ids)");
  }
};

// "sd15": CLIP ViT-L/14 text (SD1.x), "sd21": OpenCLIP ViT-H/14 text as diffusers ships it for SD2.x
// (1024 wide, 16 heads, 23 layers, gelu). Both pool at argmax(ids) (eos_token_id 2, as their configs).
ClipTextConfig clip_text_preset(const std::string& name);
std::vector<std::string> clip_text_preset_names();

// The ClipTextConfig of a transformers config.json (a CLIPTextConfig, or a CLIPConfig's "text_config");
// keys the encoder does not use (dropout, projection_dim, bos/pad ids, ...) are ignored.
ClipTextConfig read_clip_text_config(const std::filesystem::path& config_json);

class ClipTextAttentionImpl : public torch::nn::Module {
 public:
  ClipTextAttentionImpl(std::int64_t dim, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);  // [N, T, D], causal

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  std::int64_t heads;
};
TORCH_MODULE(ClipTextAttention);

class ClipTextMLPImpl : public torch::nn::Module {
 public:
  ClipTextMLPImpl(std::int64_t dim, std::int64_t hidden, bool quick_gelu);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  bool quick_gelu;  // x * sigmoid(1.702 x); else exact (erf) GELU
};
TORCH_MODULE(ClipTextMLP);

// x + attn(layer_norm1(x)), then + mlp(layer_norm2(.)).
class ClipTextEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipTextEncoderLayerImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [N, T, D]

  ClipTextAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipTextMLP mlp{nullptr};
};
TORCH_MODULE(ClipTextEncoderLayer);

struct ClipTextOutput {
  torch::Tensor hidden;  // [N, T, D] after final_layer_norm
  torch::Tensor pooled;  // [N, D] `hidden` at the pooling position (see ClipTextConfig::eos_token_id)
};

class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& config);

  // ids [N, T] (int64, T <= max_position_embeddings) -> [N, T, D]: the output of layer
  // num_hidden_layers - skip passed through final_layer_norm. skip 0 is transformers' last_hidden_state;
  // skip k equals diffusers' clip_skip=k (hidden_states[-(k+1)] through final_layer_norm).
  torch::Tensor forward(const torch::Tensor& ids, std::int64_t skip = 0);
  // forward() plus the pooled vector; with skip 0, pooled equals transformers' pooler_output.
  ClipTextOutput encode(const torch::Tensor& ids, std::int64_t skip = 0);

  const ClipTextConfig& config() const { return config_; }

  // text_model.{embeddings.{token,position}_embedding, encoder.layers, final_layer_norm}
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};

 private:
  ClipTextConfig config_;
};
TORCH_MODULE(ClipTextModel);

// Tokenizer rows (ClipBPETokenizer::tokenize) as an int64 tensor [rows, context_length].
torch::Tensor clip_token_tensor(const std::vector<std::vector<std::int32_t>>& rows);

// Key dialects of CLIP text encoder weights.
enum class ClipTextKeyDialect {
  Transformers,  // text_model.* (transformers 4, diffusers' text_encoder/); transformers 5 files lack "text_model."
  LDM,           // SD1 single file: cond_stage_model.transformer.text_model.*
  OpenCLIP,      // SD2 single file: cond_stage_model.model.{token_embedding, positional_embedding,
                 // transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final}
};
const char* dialect_name(ClipTextKeyDialect d);

// The text encoder's tensors of a file in any dialect, renamed to transformers keys. A torch .ckpt's
// "state_dict." and the single-file prefixes are stripped; the non-persistent position_ids buffer older
// files carry is dropped; OpenCLIP in_proj_{weight,bias} are split into q/k/v (rows [0,D), [D,2D),
// [2D,3D)), and its text_projection, logit_scale and resblocks at or past `num_layers` (SD2 files hold
// 24, diffusers uses 23) are dropped. Other names are kept, so strict loading reports them.
TensorMap clip_text_tensors_to_transformers(const TensorMap& tensors, std::int64_t num_layers,
                                            ClipTextKeyDialect* detected = nullptr);

// Loads weights in any dialect into `model`, strictly: every missing, unexpected and wrong-shape key is
// reported in one Error naming `source` and, for translated keys, the file's own name.
void load_clip_text_state(ClipTextModelImpl& model, const TensorMap& tensors, const std::string& source);

// Vocabulary, width, MLP width, layers and positions from weight shapes (any dialect; OpenCLIP files
// count one layer fewer than they hold, as diffusers). Heads are hidden_size / 64 (CLIP's head width).
// Activation and pooling id come from the dialect (LDM: SD1's, OpenCLIP: SD2's), else from `base`.
ClipTextConfig detect_clip_text_config(const TensorMap& tensors, const ClipTextConfig& base = {});

// Reads a safetensors / torch file: the config from a config.json beside it when there is one, else
// detected from shapes; then loads strictly.
ClipTextModel load_clip_text(const std::filesystem::path& path, const ClipTextConfig& base = {});

}  // namespace atelier
