// DiT weight files: the diffusers -> official key table, config detection from weight shapes, and a
// loader for official checkpoints (.pt, also train.py's {"model", "ema", ...}), Atelier files and
// diffusers DiTTransformer2DModel weights (.safetensors / .bin).
//
//   DiTFileInfo info;
//   DiT model = load_dit("DiT-XL-2-256x256.pt", {}, &info);   // eval mode, config detected
//   DiT model = load_dit("transformer/diffusion_pytorch_model.safetensors");  // reads config.json beside it
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "core/tensor_map.h"
#include "diffusion/dit.h"

namespace atelier {

enum class DiTKeyDialect {
  Official,   // facebookresearch/DiT and Atelier: x_embedder.proj, blocks.N.attn.qkv, final_layer.linear, ...
  Diffusers,  // diffusers DiTTransformer2DModel: pos_embed.proj, transformer_blocks.N.attn1.to_q, proj_out_2, ...
};
const char* dialect_name(DiTKeyDialect d);
// Diffusers if any key starts with "transformer_blocks.", "pos_embed.proj." or "proj_out_"; else Official.
DiTKeyDialect detect_dit_dialect(const TensorMap& tensors);

// diffusers DiTTransformer2DModel state dict -> official names. to_q/to_k/to_v are concatenated into
// attn.qkv ([q|k|v] rows). diffusers keeps one timestep/class embedder per block
// (transformer_blocks.N.norm1.emb) where DiT has one: block 0's is used (diffusers also uses it for the
// final layer) and a warning is added for every other block whose copy differs (checkpoints converted
// from DiT hold equal copies; a model fine-tuned in diffusers may not). pos_embed is a non-persistent
// buffer in diffusers: it is taken from "pos_embed.pos_embed" if present, else generated for
// `config` (hidden_size, input_size / patch_size). Keys outside the table are kept unchanged, so strict
// loading reports them as unexpected.
// Not representable, and not translated: diffusers' MLP-branch LayerNorm (norm3) uses norm_eps (1e-5 by
// default) where DiT uses 1e-6 (relative output change ~1e-6 on the parity fixture), and its timestep
// embedding uses frequency shift 1: set DiTConfig::timestep_freq_shift = 1 (load_dit does).
TensorMap dit_from_diffusers(const TensorMap& diffusers_state, const DiTConfig& config,
                             std::vector<std::string>* warnings = nullptr);

// Layer names (module paths without ".weight") of a diffusers DiT, as LoRA files name them, and the
// official layers they are. to_q / to_k / to_v are row blocks 0 / 1 / 2 of the fused attn.qkv; the other
// layers map one to one. A block's copy of block 0's embedders (transformer_blocks.N>0.norm1.emb.*) has no
// layer of its own.
struct DiTLayerTarget {
  std::string path;    // official layer path; empty: not a diffusers DiT layer name
  int qkv_block = -1;  // 0, 1, 2: that row block of attn.qkv; -1: the whole layer
};
DiTLayerTarget dit_layer_from_diffusers(const std::string& diffusers_layer);
// The diffusers names of an official layer path (attn.qkv: to_q, to_k, to_v, in row-block order); empty
// when diffusers has no such layer.
std::vector<std::string> dit_layer_to_diffusers(const std::string& official_layer);

// Infers the config of an official-key state dict from shapes: hidden_size, in_channels and patch_size
// (x_embedder.proj), depth (blocks.N), mlp_ratio (mlp.fc1), learn_sigma (final_layer.linear rows =
// p*p*out, out = in or 2*in), num_classes (embedding rows - 1 when base.class_dropout_prob > 0, else
// rows) and input_size (pos_embed tokens = (input_size / patch)^2; base.input_size without pos_embed).
// num_heads cannot be read from shapes: it is dit_heads_for_width(hidden_size). class_dropout_prob and
// timestep_freq_shift come from `base`. Throws Error naming the key when a required one is missing or
// has an impossible shape.
DiTConfig detect_dit_config(const TensorMap& official_state, const DiTConfig& base = {});
// Heads of the DiT preset with this width (1152, 1024 -> 16; 768 -> 12; 384 -> 6; Atelier's 128 -> 4),
// else max(1, hidden / 64).
std::int64_t dit_heads_for_width(std::int64_t hidden_size);

struct DiTLoadOptions {
  std::int64_t num_heads = 0;   // 0: a file's Atelier config or diffusers config.json, else by width
  std::int64_t input_size = 0;  // used when the file has no pos_embed (diffusers); 0: config.json, else 32
};

// What load_dit read.
struct DiTFileInfo {
  DiTKeyDialect dialect = DiTKeyDialect::Official;
  std::string prefix;  // "ema." or "model." (training checkpoints: the tensors used), or ""
  DiTConfig config;
  std::vector<std::string> warnings;
};

// Loads a DiT from any tensor file (safetensors or torch zip, told apart by content). With keys under
// "ema." the EMA weights are used, else "model." ones, else all keys. The dialect is detected by key
// names. The config is the file's Atelier "dit.config" metadata if present, else detected from shapes
// (diffusers: timestep_freq_shift 1; sample_size and num_attention_heads from a diffusers config.json
// next to the file). Loading is strict: every missing, unexpected and wrong-shape tensor is listed in one
// Error naming the file (and, for translated keys, the file's own name). Returns the model in eval mode.
DiT load_dit(const std::filesystem::path& file, const DiTLoadOptions& options = {}, DiTFileInfo* info = nullptr);

}  // namespace atelier
