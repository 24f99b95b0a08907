// Concept jobs: `lora` and `ortho_lora` teach a base DiT one new concept (a folder of images, or a Shapes
// concept glyph) under a new conditioning token: a label-table row of its own (textual-inversion style,
// own learning rate) plus a LoRA on the attention/MLP linears. `ortho_lora` fixes the LoRA
// down-projections to the concept's columns of the shared orthogonal basis (adapters/ortho.h), so
// concepts merge by summation. `merge` folds any set of concept adapters (with weights) into one
// standalone model whose label table holds every concept's token, with a preview row per concept.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"
#include "data/shapes.h"

namespace atelier {

struct ConceptConfig {
  std::string base = "assets/models/dit_shapes.safetensors";
  std::string token;   // the concept token's name (empty: the glyph's or the folder's name)
  std::string images;  // folder of the concept's images (empty: the Shapes glyph below)
  std::string glyph = "spiral";
  std::vector<std::string> styles{"flat"};
  std::int64_t rank = 20;
  double alpha = 20.0;
  std::vector<std::string> targets{"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};
  std::int64_t ortho_seed = 0;
  std::int64_t ortho_slot = 0;
  TrainSchedule train{.steps = 300, .batch = 16, .warmup = 0, .grad_clip = 1.0, .checkpoint_every = 100};
  double lr = 1e-3;
  double token_lr = 1e-2;
  std::int64_t seed = 0;
  PreviewSettings preview{.sample_every = 100, .sample_steps = 50, .cfg_scale = 3.0};
  std::int64_t eval_samples = 32;
  std::string probe = "assets/models/probe.safetensors";
  std::string output = "adapter.safetensors";
  std::string device = "auto";
  std::string tokenizer = "assets/text/bpe_simple_vocab_16e6.txt.gz";

  template <class V>
  void fields(V& v) {
    v("base", base,
      "base model: an Atelier DiT file, or Stable Diffusion (lora only: a LoRA on its UNet from the captioned "
      "images of 'images', written as a kohya file)",
      Input::Model);
    v("concept", token, "the new token's name (empty: the glyph's or the image folder's name)");
    v("images", images, "folder of the concept's images (empty: draw the Shapes glyph)", Input::ImageFolder);
    v("glyph", glyph, "Shapes concept glyph drawn when no image folder is given", Choices(shapes::glyph_names()));
    v("styles", styles, "Shapes styles of the glyph images", Choices(shapes::style_names()));
    v("rank", rank, "LoRA rank (ortho_lora: basis columns per concept)", Range{1, 4096});
    v("alpha", alpha, "LoRA alpha (scale = alpha / rank)", Range{0, 1e6});
    v("targets", targets, "LoRA target layers (path tails or globs)");
    v("ortho_seed", ortho_seed, "ortho_lora: seed of the shared orthogonal bases", Range{0, 9e15});
    v("ortho_slot", ortho_slot, "ortho_lora: this concept's columns are slot*rank .. slot*rank+rank-1", Range{0, 1e6});
    train.fields(v);
    v("lr", lr, "AdamW learning rate of the LoRA factors", Range{0, 1});
    v("token_lr", token_lr, "AdamW learning rate of the concept's token (label row)", Range{0, 10});
    v("seed", seed, "seed of the token and LoRA init, noise, timesteps and label dropout", Range{0, 9e15});
    preview.fields(v);
    v("eval_samples", eval_samples, "concept samples for the identity metrics", Range{1, 4096});
    v("probe", probe, "Shapes probe for identity metrics (empty: none)", Input::File);
    v("output", output, "adapter file written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
    v("tokenizer", tokenizer, "Stable Diffusion bases: CLIP BPE vocabulary (a diffusers folder's own first)",
      Input::File);
  }
};

void lora_concept_job(const ConceptConfig& config, JobContext& ctx);
void ortho_concept_job(const ConceptConfig& config, JobContext& ctx);

struct MergeConfig {
  std::string base = "assets/models/dit_shapes.safetensors";
  std::vector<std::string> adapters;
  std::vector<double> weights;  // empty: 0.6 each (lambda of the orthogonal-adaptation paper)
  std::vector<double> block_weights;
  std::int64_t per_concept = 8;
  std::int64_t sample_steps = 50;
  double cfg_scale = 3.0;
  std::int64_t seed = 0;
  std::int64_t eval_samples = 32;
  std::string probe = "assets/models/probe.safetensors";
  std::string output = "model.safetensors";
  std::string device = "auto";

  template <class V>
  void fields(V& v) {
    v("base", base, "base model the adapters were trained on", Input::Model);
    v("adapters", adapters, "concept adapter files (lora / ortho_lora jobs)", Input::Adapters);
    v("weights", weights, "one merge weight per adapter (empty: 0.6 each)", PerItem{"adapters", 0.6}, Range{-100, 100});
    v("block_weights", block_weights, "one weight per DiT block for every LoRA update (empty: 1 each)",
      Range{-100, 100});
    v("per_concept", per_concept, "preview images per concept (one grid row each)", Range{1, 256});
    v("sample_steps", sample_steps, "sampling steps (DPM++ 2M) of the preview", Range{1, 1000});
    v("cfg_scale", cfg_scale, "guidance scale of the preview", Range{0, 100});
    v("seed", seed, "seed of the preview noise", Range{0, 9e15});
    v("eval_samples", eval_samples, "samples per concept for the identity metrics", Range{1, 4096});
    v("probe", probe, "Shapes probe for identity metrics (empty: none)", Input::File);
    v("output", output, "merged model written in the run folder", OutputFile{".safetensors"});
    v("device", device, "auto (CUDA when present), cpu, cuda or cuda:N");
  }
};
void merge_job(const MergeConfig& config, JobContext& ctx);

}  // namespace atelier
