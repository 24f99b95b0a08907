// E2GAN (Efficient Training of Efficient GANs for Image-to-Image Translation, ICML 2024) in three jobs:
//
//   e2gan_data     a diffusion teacher (base DiT + an edit's adapter) edits input images SDEdit-style
//                  (noise to `strength`, denoise conditioned on the input's class); writes the pairs, a
//                  ground-truth restyle beside each Shapes input, and optionally keeps only a
//                  representative subset (k-means on probe features).
//   e2gan_base     trains one generator (gan/e2gan.h) on the pairs of several edits: LSGAN against a
//                  conditional PatchGAN + L1 to the teacher.
//   e2gan_concept  a new edit on a trained base: LoRA on the crucial layers only (ranks per layer group
//                  chosen by a logged search), the new edit's tokens, everything else frozen; or the
//                  baselines in the same job: a pix2pix-style generator from scratch, full fine-tuning.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"
#include "data/shapes_data.h"
#include "diffusion/generate.h"
#include "gan/e2gan.h"

namespace atelier {

struct E2GanDataConfig {
  std::string teacher = "assets/models/dit_shapes.safetensors";
  std::string adapter;
  std::string edit;
  std::string style;
  std::string images;
  ShapesData data;
  std::int64_t count = 512;
  std::int64_t select = 0;
  std::int64_t val_count = 64;
  double strength = 0.6;
  SamplerSettings sampler{.steps = 30};
  std::int64_t batch = 64;
  std::int64_t seed = 0;
  std::string probe = "assets/models/probe.safetensors";
  std::string output = "pairs.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("teacher", teacher, "the diffusion teacher: an Atelier DiT model file", Input::Model);
    v("adapter", adapter, "the edit: an adapter of the teacher (DiffFit/LoRA, e.g. trained on a Shapes style)",
      Input::File);
    v("edit", edit, "name of the edit (empty: the adapter's Shapes style, else its file name)");
    v("style", style, "Shapes inputs: style of the ground-truth restyle (empty: the adapter's training style)");
    v("images", images, "input images: a folder with one sub-folder per class of the teacher (empty: Shapes)",
      Input::ImageFolder);
    data.fields(v);
    v("count", count, "training inputs edited (before selection)", Range{1, 1e6});
    v("select", select, "keep this many representative training pairs (k-means on probe features; 0: all)",
      Range{0, 1e6});
    v("val_count", val_count, "held-out inputs edited for fidelity metrics (Shapes test split)", Range{0, 1e6});
    v("strength", strength, "SDEdit strength: fraction of the sampler's steps run from the noised input",
      Range{0.01, 1});
    sampler.fields(v);
    v("batch", batch, "images the teacher edits at once", Range{1, 4096});
    v("seed", seed, "seed of the teacher's noise and the selection", Range{0, 9e15});
    v("probe", probe, "Shapes probe for selection features and metrics (empty: none)", Input::File);
    v("output", output, "edit-pairs file written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};

void e2gan_data_job(const E2GanDataConfig& config, JobContext& ctx);

// Loss weights and optimizer of GAN training (pix2pix's Adam betas and L1 weight).
struct GanLossSettings {
  double l1_weight = 100.0;
  double adv_weight = 1.0;
  double lr = 2e-4;
  double lr_d = 2e-4;
  double beta1 = 0.5;
  std::int64_t disc_width = 32;

  template <class V>
  void fields(V& v) {
    v("l1_weight", l1_weight, "weight of the L1 distance to the teacher's edit", Range{0, 1e6});
    v("adv_weight", adv_weight, "weight of the adversarial (LSGAN) loss", Range{0, 1e6});
    v("lr", lr, "Adam learning rate of the generator's trained tensors", Range{0, 1});
    v("lr_d", lr_d, "Adam learning rate of the discriminator", Range{0, 1});
    v("beta1", beta1, "Adam beta1 (pix2pix: 0.5)", Range{0, 0.999});
    v("disc_width", disc_width, "PatchGAN width of its first layer", Range{4, 1024});
  }
};

struct E2GanBaseConfig {
  std::vector<std::string> pairs;
  E2GanConfig generator{.channels = {16, 32, 64}};
  GanLossSettings loss;
  TrainSchedule train{.steps = 3000, .batch = 32, .warmup = 0, .grad_clip = 0.0, .checkpoint_every = 500};
  std::int64_t eval_every = 500;
  std::int64_t seed = 0;
  std::string probe = "assets/models/probe.safetensors";
  std::string output = "generator.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("pairs", pairs, "edit-pairs files (e2gan_data), one per edit the base learns", Input::File);
    v("channels", generator.channels, "generator widths at strides 2, 4 and 8", Range{1, 4096});
    v("heads", generator.heads, "attention heads of the transformer block", Range{1, 64});
    v("edit_tokens", generator.edit_tokens, "learned tokens per edit", Range{1, 256});
    v("mlp_ratio", generator.mlp_ratio, "MLP hidden width / block width", Range{0.5, 16});
    v("norm", generator.norm, "normalisation of the generator's convolutional stages", Choices{"none", "instance"});
    loss.fields(v);
    train.fields(v);
    v("eval_every", eval_every, "steps between held-out fidelity evaluations and preview grids", Range{1, 1e9});
    v("seed", seed, "seed of initialisation and batches", Range{0, 9e15});
    v("probe", probe, "Shapes probe for FD-shapes (empty: none)", Input::File);
    v("output", output, "generator file written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};

void e2gan_base_job(const E2GanBaseConfig& config, JobContext& ctx);

// How a new edit is learned: E2GAN's LoRA on the crucial layers of a base, a generator of the base's
// shape trained from scratch (pix2pix-style baseline), or every tensor of the base fine-tuned.
enum class EditMethod { LoRA, Scratch, Full };
inline const EnumNames<EditMethod>& enum_names(EditMethod) {
  static const EnumNames<EditMethod> names = {
      {EditMethod::LoRA, "lora"}, {EditMethod::Scratch, "scratch"}, {EditMethod::Full, "full"}};
  return names;
}

struct E2GanConceptConfig {
  std::string generator;
  std::string pairs;
  std::string edit;
  EditMethod method = EditMethod::LoRA;
  bool search = true;
  std::vector<std::int64_t> ranks{0, 1, 2, 4, 8};
  std::int64_t rank = 4;
  std::int64_t search_steps = 150;
  double tolerance = 0.02;
  GanLossSettings loss{.lr = 1e-3};
  LrDecay lr_decay = LrDecay::Cosine;
  TrainSchedule train{.steps = 1000, .batch = 32, .warmup = 0, .grad_clip = 0.0, .checkpoint_every = 250};
  std::int64_t eval_every = 250;
  std::int64_t seed = 0;
  std::string probe = "assets/models/probe.safetensors";
  std::string output = "edit.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("generator", generator, "the base generator (e2gan_base)", Input::File);
    v("pairs", pairs, "edit-pairs file of the new edit (e2gan_data)", Input::File);
    v("edit", edit, "name of the new edit (empty: the pairs' edit name)");
    v("method", method, "lora (E2GAN: LoRA on the crucial layers), scratch (pix2pix-style) or full fine-tuning");
    v("search", search, "lora: search a rank per layer group (else `rank` everywhere)");
    v("ranks", ranks, "lora: candidate ranks of the search (0: the group gets no LoRA)", Range{0, 1024});
    v("rank", rank, "lora: the rank of every group without a search", Range{1, 1024});
    v("search_steps", search_steps, "lora: training steps of each search trial", Range{1, 1e6});
    v("tolerance", tolerance,
      "lora: a group takes the smallest rank whose held-out L1 is within this fraction of its best trial",
      Range{0, 10});
    loss.fields(v);
    v("lr_decay", lr_decay, "learning rate over the run: constant, or a cosine decay to 0 at the last step");
    train.fields(v);
    v("eval_every", eval_every, "steps between held-out fidelity evaluations and preview grids", Range{1, 1e9});
    v("seed", seed, "seed of initialisation, LoRA and batches", Range{0, 9e15});
    v("probe", probe, "Shapes probe for FD-shapes (empty: none)", Input::File);
    v("output", output, "edit file (lora) or generator file (scratch, full) written in the run folder",
      OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};

// The rank-search rule for one layer group: of its trials (rank, held-out L1), the smallest rank whose L1
// is within `tolerance` (a fraction) of the best trial's. Rank 0 (no LoRA on the group) can be chosen.
std::int64_t smallest_rank_within(const std::vector<std::pair<std::int64_t, double>>& trials, double tolerance);

void e2gan_concept_job(const E2GanConceptConfig& config, JobContext& ctx);

}  // namespace atelier
