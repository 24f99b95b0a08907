// A small CLIP-style dual encoder for the Shapes world (Radford et al. 2021, "Learning Transferable Visual
// Models From Natural Language Supervision"): the zero-shot classifier behind test-time prompt tuning
// (TPT, DiffTPT in distill/). Trained by the `train_clip` job (eval/train_clip.h) on Shapes images and
// their captions; the shipped model is assets/models/clip_shapes.safetensors (docs/clip.md).
//
//   ClipModel clip = load_clip("assets/models/clip_shapes.safetensors");
//   auto logits = clip->zero_shot_logits(images, {"circle", "square"});          // [N, 2]
//
// Prompt tuning (CoOp / TPT): the words of "a photo of a" become learnable context vectors.
//
//   auto ctx = clip->initial_context("a photo of a").requires_grad_(true);     // [4, W]
//   auto ids = clip->class_token_ids({"circle", "square"});
//   auto text = clip->encode_text_with_context(ctx, ids);                      // [2, D], grad to ctx
//   auto logits = clip->logit_scale_exp() * clip->encode_image(images).mm(text.t());
//
// Only the context should learn: freeze the model first (p.requires_grad_(false) for its parameters).
//
// The text tower, its initialisation and parameter paths are CLIP's (openai/CLIP clip/model.py:
// `token_embedding`, `positional_embedding`, `transformer.resblocks.N.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}`,
// `ln_final`, `text_projection`, `logit_scale`). The image tower departs from CLIP's ResNet/ViT: a small
// CNN (the Shapes probe's stages) on 32x32 images, then CLIP ViT's `ln_post` and `proj`, so it trains in
// minutes on a CPU.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor_map.h"

namespace atelier {

// Word-level tokenizer over a fixed vocabulary (no BPE: the Shapes world has a closed vocabulary).
// Text is lower-cased and split at whitespace; punctuation other than a hyphen inside a word
// ("two-tone") is a token of its own. Words outside the vocabulary become <unk>. A tokenized text is
// <sot> words <eot> <pad>..., `context_length` ids.
class ClipTokenizer {
 public:
  static constexpr std::int64_t kPad = 0, kUnk = 1, kSot = 2, kEot = 3;  // vocabulary()[0..3]

  // `vocabulary` starts with <pad>, <unk>, <sot>, <eot>; Error otherwise or on duplicates.
  explicit ClipTokenizer(std::vector<std::string> vocabulary, std::int64_t context_length = 24);
  // Every word of Shapes captions (data/shapes.h Attributes::caption) plus prompt words ("photo", "of",
  // "the", "an", "image", "picture", "shape").
  static const std::vector<std::string>& shapes_vocabulary();

  std::vector<std::string> words(const std::string& text) const;    // lower-cased, punctuation split
  std::vector<std::int64_t> encode(const std::string& text) const;  // word ids, no <sot>/<eot>
  // [M, context_length] int64. Error naming the text when it has more than context_length - 2 words.
  torch::Tensor tokenize(const std::vector<std::string>& texts) const;
  // Words of one row of ids up to <eot>, joined with spaces (punctuation attached to the word before).
  std::string decode(const torch::Tensor& ids) const;
  std::int64_t id(const std::string& word) const;  // kUnk when absent
  const std::vector<std::string>& vocabulary() const { return vocabulary_; }
  std::int64_t context_length() const { return context_length_; }

 private:
  std::vector<std::string> vocabulary_;
  std::map<std::string, std::int64_t> ids_;
  std::int64_t context_length_;
};

struct ClipConfig {
  std::int64_t image_size = 32;    // images of another size are resized to it (area down, bilinear up)
  std::int64_t vision_width = 24;  // CNN stages: width, 2*width, 4*width channels
  std::int64_t embed_dim = 128;    // joint embedding
  std::int64_t context_length = 24;
  std::int64_t transformer_width = 64;
  std::int64_t transformer_heads = 4;
  std::int64_t transformer_layers = 3;

  template <class V>
  void fields(V& v) {
    v("image_size", image_size, "size the image encoder works at", Range{8, 256});
    v("vision_width", vision_width, "channels of the image CNN's first stage (features = 4*width)", Range{4, 256});
    v("embed_dim", embed_dim, "dimension of the joint image-text embedding", Range{8, 1024});
    v("context_length", context_length, "tokens of a text, <sot> and <eot> included", Range{4, 77});
    v("transformer_width", transformer_width, "text transformer width", Range{8, 1024});
    v("transformer_heads", transformer_heads, "text transformer attention heads", Range{1, 64});
    v("transformer_layers", transformer_layers, "text transformer layers", Range{1, 24});
  }
};

// The building blocks, with CLIP's parameter paths. Attention holds nn.MultiheadAttention's tensors.
class ClipAttentionImpl : public torch::nn::Module {
 public:
  ClipAttentionImpl(std::int64_t width, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);  // [M, L, W] -> [M, L, W], causal

  torch::Tensor in_proj_weight, in_proj_bias;  // [3W, W], [3W]: q, k, v stacked
  torch::nn::Linear out_proj{nullptr};

 private:
  std::int64_t heads_;
};
TORCH_MODULE(ClipAttention);

class ClipResidualBlockImpl : public torch::nn::Module {  // pre-norm; MLP with QuickGELU
 public:
  ClipResidualBlockImpl(std::int64_t width, std::int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);  // [M, L, W]

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  ClipAttention attn{nullptr};
  torch::nn::Sequential mlp{nullptr};                // c_fc, QuickGELU, c_proj
  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};  // mlp's layers
};
TORCH_MODULE(ClipResidualBlock);

class ClipTransformerImpl : public torch::nn::Module {
 public:
  ClipTransformerImpl(std::int64_t width, std::int64_t layers, std::int64_t heads);
  torch::Tensor forward(torch::Tensor x);  // [M, L, W], causal

  torch::nn::ModuleList resblocks{nullptr};
};
TORCH_MODULE(ClipTransformer);

// The image tower: the probe's CNN stages (width, 2*width, 4*width; two 2x2 pools), global average
// pool, then CLIP ViT's ln_post and proj.
class ClipVisualImpl : public torch::nn::Module {
 public:
  ClipVisualImpl(std::int64_t width, std::int64_t embed_dim);
  torch::Tensor forward(const torch::Tensor& x);  // [N, 3, S, S] -> [N, D], not normalised

  torch::nn::Sequential features{nullptr};
  torch::nn::LayerNorm ln_post{nullptr};
  torch::Tensor proj;  // [4*width, D]
};
TORCH_MODULE(ClipVisual);

class ClipModelImpl : public torch::nn::Module {
 public:
  explicit ClipModelImpl(const ClipConfig& config,
                         std::vector<std::string> vocabulary = ClipTokenizer::shapes_vocabulary());

  // [N, 3, H, W] in [-1, 1] -> L2-normalised [N, D]. Other sizes are resized to config().image_size.
  torch::Tensor encode_image(const torch::Tensor& images);
  // Token ids [M, L] (ClipTokenizer::tokenize) -> L2-normalised [M, D]: features at the first <eot>.
  torch::Tensor encode_text(const torch::Tensor& token_ids);
  // CoOp/TPT prompts: for each class k the sequence <sot> context class_token_ids[k] <eot> <pad>...,
  // through the text transformer -> L2-normalised [K, D], differentiable w.r.t. `context`.
  // `context`: [n_ctx, W] shared by all classes, or [K, n_ctx, W] one per class. Error when a prompt
  // does not fit the context length.
  torch::Tensor encode_text_with_context(const torch::Tensor& context,
                                         const std::vector<std::vector<std::int64_t>>& class_token_ids);
  // Token embeddings of `phrase`'s words: [n_words, W], a detached copy (TPT's initial context).
  torch::Tensor initial_context(const std::string& phrase = "a photo of a");
  // Word ids of each class name (ClipTokenizer::encode), for encode_text_with_context.
  std::vector<std::vector<std::int64_t>> class_token_ids(const std::vector<std::string>& class_names) const;
  // exp(logit_scale) clamped at 100, as CLIP: scalar tensor.
  torch::Tensor logit_scale_exp() const;
  // logit_scale * cos(image, prompt) for each image and class, prompt = `prompt_template` with "{}"
  // replaced by the class name: [N, K]. No grad; batches of 256 images.
  torch::Tensor zero_shot_logits(const torch::Tensor& images, const std::vector<std::string>& class_names,
                                 const std::string& prompt_template = "a photo of a {}");

  torch::Tensor resized(const torch::Tensor& images) const;  // to config().image_size (as ProbeNet)
  const ClipConfig& config() const { return config_; }
  const ClipTokenizer& tokenizer() const { return tokenizer_; }

  ClipVisual visual{nullptr};
  ClipTransformer transformer{nullptr};
  torch::nn::Embedding token_embedding{nullptr};
  torch::Tensor positional_embedding;  // [L, W]
  torch::nn::LayerNorm ln_final{nullptr};
  torch::Tensor text_projection;  // [W, D]
  torch::Tensor logit_scale;      // [] log of the scale, init ln(1/0.07)

 private:
  // Embedded sequences [M, L, W], <eot> positions [M] -> normalised [M, D].
  torch::Tensor encode_embedded(const torch::Tensor& x, const torch::Tensor& eot);

  ClipConfig config_;
  ClipTokenizer tokenizer_;
};
TORCH_MODULE(ClipModel);

// Writes `model` with metadata atelier.kind = "shapes_clip", clip.config (JSON), clip.vocabulary (JSON
// list) and `extra` (e.g. atelier.config of the job that trained it).
void save_clip(const std::filesystem::path& path, ClipModel& model, const Metadata& extra = {});
// Loads a file written by save_clip (eval mode). Error naming the file when it is not one, or when a
// tensor is missing, unexpected or of the wrong shape.
ClipModel load_clip(const std::filesystem::path& path);

// Fraction of `images` whose zero-shot prediction (zero_shot_logits argmax) equals `labels` [N].
double zero_shot_accuracy(ClipModel& model, const torch::Tensor& images, const torch::Tensor& labels,
                          const std::vector<std::string>& class_names,
                          const std::string& prompt_template = "a photo of a {}");

}  // namespace atelier
