// E2GAN-style image-to-image generator and a PatchGAN discriminator (Efficient Training of Efficient GANs
// for Image-to-Image Translation, ICML 2024; pix2pix's conditional PatchGAN, Isola et al. 2017).
//
// Generator, for an input of H x W (any multiple of 8):
//
//   down.0  conv 3x3 s2  3 -> c0, [IN], ReLU        H/2     crucial
//   res.0, res.1  ResBlock(c0)                      H/2     frozen in a new edit
//   down.1  conv 3x3 s2  c0 -> c1, [IN], ReLU       H/4     crucial
//   down.2  conv 3x3 s2  c1 -> c2, [IN], ReLU       H/8     crucial
//   block   pre-norm transformer on the H/8 tokens: self-attention, cross-attention to the edit's
//           learned tokens (edits[e], [tokens, c2]), MLP                         crucial
//   up.2    nearest x2, conv 3x3  c2 -> c1, [IN], ReLU, + down.1's output     H/4     crucial
//   up.1    nearest x2, conv 3x3  c1 -> c0, [IN], ReLU, + res.1's output      H/2     crucial
//   res.2   ResBlock(c0)                                                       H/2     frozen
//   up.0    nearest x2, conv 3x3  c0 -> 3, tanh                                H       crucial
//
// The paper puts its one transformer block between a downsampling and an upsampling stage and keeps
// the rest convolutional; Atelier places it at stride 8 (not 4) so self-attention stays cheap at
// 256 x 256 (1,024 tokens), makes InstanceNorm ([IN]) optional (`norm`), and adds the two skip connections (sums, not
// concatenations) so a 32 x 32 Shapes image keeps its geometry through a 4 x 4 bottleneck. Every Conv2d and Linear is
// called through the generator's LayerHooks, so LoRA on the crucial layers attaches without touching the weights.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/layer_hooks.h"

namespace atelier {

struct E2GanConfig {
  std::vector<std::int64_t> channels{16, 32, 64};  // c0, c1, c2
  std::int64_t heads = 4;
  std::int64_t edit_tokens = 4;  // learned tokens per edit (cross-attention keys/values)
  std::int64_t num_edits = 1;
  double mlp_ratio = 2.0;
  // Normalisation of the convolutional stages: per-image InstanceNorm (pix2pix), or none. Instance
  // normalisation removes each channel's mean, which on small flat-coloured images loses the colours an
  // edit has to keep.
  std::string norm = "none";

  std::int64_t stride() const { return 8; }
  bool instance_norm() const { return norm == "instance"; }
  template <class V>
  void fields(V& v) {
    v("channels", channels, "generator widths at strides 2, 4 and 8 (three values)", Range{1, 4096});
    v("heads", heads, "attention heads of the transformer block (divides the last width)", Range{1, 64});
    v("edit_tokens", edit_tokens, "learned tokens per edit, attended to by the cross-attention", Range{1, 256});
    v("num_edits", num_edits, "edits the generator knows (rows of its edit table)", Range{1, 100000});
    v("mlp_ratio", mlp_ratio, "MLP hidden width / block width", Range{0.5, 16});
    v("norm", norm, "normalisation of the convolutional stages", Choices{"none", "instance"});
  }
};

// Conv 3x3 -> [InstanceNorm (affine)] -> ReLU, -> conv 3x3 -> [InstanceNorm], + input.
class GanResBlockImpl : public torch::nn::Module {
 public:
  GanResBlockImpl(std::int64_t channels, bool norm, std::shared_ptr<LayerHooks> hooks);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::InstanceNorm2d norm1{nullptr}, norm2{nullptr};  // null without normalisation

 private:
  std::shared_ptr<LayerHooks> hooks_;
};
TORCH_MODULE(GanResBlock);

// Conv (stride 2 down, or nearest x2 then stride 1 up) -> [InstanceNorm] -> ReLU; the output stage
// (`relu` false) is the convolution alone.
class GanStageImpl : public torch::nn::Module {
 public:
  GanStageImpl(std::int64_t in, std::int64_t out, bool up, bool norm, bool relu, std::shared_ptr<LayerHooks> hooks);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::InstanceNorm2d norm{nullptr};  // null without normalisation and for the output stage
  bool up, relu;

 private:
  std::shared_ptr<LayerHooks> hooks_;
};
TORCH_MODULE(GanStage);

// Pre-norm block: x += SelfAttn(LN(x)); x += CrossAttn(LN(x), edit tokens); x += MLP(LN(x)).
class EditBlockImpl : public torch::nn::Module {
 public:
  EditBlockImpl(std::int64_t dim, std::int64_t heads, double mlp_ratio, std::shared_ptr<LayerHooks> hooks);
  // x [N, T, D]; edit [N, E, D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& edit);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, q{nullptr}, kv{nullptr}, cross_proj{nullptr}, fc1{nullptr},
      fc2{nullptr};
  std::int64_t heads;

 private:
  std::shared_ptr<LayerHooks> hooks_;
};
TORCH_MODULE(EditBlock);

class E2GanGeneratorImpl : public torch::nn::Module {
 public:
  explicit E2GanGeneratorImpl(const E2GanConfig& config);
  // x [N, 3, H, W] in [-1, 1] (H, W multiples of 8); edit [N] int64 rows of the edit table. Returns
  // [N, 3, H, W] in [-1, 1].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& edit);
  // The same with the edit's tokens given directly: tokens [N, E, c2] (or [E, c2] for the whole batch).
  torch::Tensor forward_tokens(const torch::Tensor& x, const torch::Tensor& tokens);

  const E2GanConfig& config() const { return config_; }
  LayerHooks& hooks() { return *hooks_; }
  // Appends an edit row (a copy of `init` [E, c2], e.g. the mean of the known edits); returns its index.
  std::int64_t add_edit(const torch::Tensor& init);

  // down.i / up.i: the stage at stride 2^(i+1) (up.0 is the output stage); res.0-2 the ResBlocks.
  torch::nn::ModuleList down{nullptr}, res{nullptr}, up{nullptr};
  EditBlock block{nullptr};
  torch::Tensor edits;  // [num_edits, edit_tokens, c2]

 private:
  E2GanConfig config_;
  std::shared_ptr<LayerHooks> hooks_ = std::make_shared<LayerHooks>();
};
TORCH_MODULE(E2GanGenerator);

// Module-path patterns of the generator's crucial layers (LoRA targets in a new edit), grouped as the
// rank search sees them: "down" (down.0-2), "block" (the transformer's Linears), "up" (up.0-2).
const std::vector<std::pair<std::string, std::vector<std::string>>>& e2gan_crucial_groups();

// Conditional PatchGAN: judges (input, output) pairs, 6 channels, with 4x4 convolutions
// (s2, s2, s1, s1; LeakyReLU 0.2, InstanceNorm after the first); one logit per overlapping patch.
struct PatchDiscriminatorConfig {
  std::int64_t width = 32;
  template <class V>
  void fields(V& v) {
    v("width", width, "discriminator width of its first layer (doubling, then 4x)", Range{4, 1024});
  }
};

class PatchDiscriminatorImpl : public torch::nn::Module {
 public:
  explicit PatchDiscriminatorImpl(const PatchDiscriminatorConfig& config);
  // input, output [N, 3, H, W] (H, W >= 16) -> logits [N, 1, h, w]. With `frozen`, the discriminator's
  // parameters enter as constants: gradients reach `output` (the generator) but not the discriminator,
  // so one backward pass can train both (the discriminator on its own loss with detached fakes).
  torch::Tensor forward(const torch::Tensor& input, const torch::Tensor& output, bool frozen = false);
  torch::nn::ModuleList convs{nullptr};  // conv.0-3
  torch::nn::ModuleList norms{nullptr};  // after conv.1 and conv.2
};
TORCH_MODULE(PatchDiscriminator);

// A generator file: safetensors with the weights (module paths as above) and metadata
// "atelier.kind" = "e2gan_generator", "e2gan.config", "edits" (names, one per table row), "image_size"
// (the size it was trained at), "atelier.config" (the job that wrote it).
struct GeneratorInfo {
  E2GanConfig config;
  std::vector<std::string> edits;
  std::int64_t image_size = 32;
};
void save_generator(const std::filesystem::path& path, E2GanGenerator& generator, const GeneratorInfo& info,
                    const json& job_config);
// Error naming the file when it is not a generator file or its tensors do not fit its config.
E2GanGenerator load_generator(const std::filesystem::path& path, GeneratorInfo* info = nullptr);
// Row of `edit` in info.edits; Error listing the edits otherwise.
std::int64_t edit_index(const GeneratorInfo& info, const std::string& edit, const std::string& source);

// Least-squares GAN losses (Mao et al. 2017): D pushes real to 1 and fake to 0, G pushes fake to 1.
torch::Tensor lsgan_d_loss(const torch::Tensor& real_logits, const torch::Tensor& fake_logits);
torch::Tensor lsgan_g_loss(const torch::Tensor& fake_logits);

}  // namespace atelier
