// `train_clip`: trains the Shapes CLIP dual encoder (eval/clip.h) with CLIP's symmetric InfoNCE on
// (image, caption) batches. Every sample is a pure function of (seed, index): base shapes and concept
// glyphs, all styles, colours, sizes and backgrounds, upright or at any angle. A fraction of the captions
// are short prompts made from the full caption's words ("a photo of a red circle", "the moon glyph"),
// so prompt words have trained embeddings. Targets are multi-positive: caption j counts as a match for
// image i when every attribute word it names is true of image i (standard InfoNCE when captions are
// distinct). AdamW (weight decay on matrices only) with a cosine rate after the warm-up, exact resume.
//
// Validation: zero-shot accuracy with the prompt "a photo of a {}" (and "a {}") on the Shapes test split
// drawn like the `ShapesData` fields say (default: the shipped DiT's training data: 7 classes, flat,
// upright, plain backgrounds), and caption retrieval accuracy (image -> caption and caption -> image,
// top-1 among `val_samples` full captions of the val split; a retrieved caption equal to the true one
// counts). Writes the model, metrics.json and preview.png (zero-shot predictions).
#pragma once
#include <string>

#include "core/config.h"
#include "core/job.h"
#include "core/train_loop.h"
#include "data/shapes_data.h"
#include "eval/clip.h"

namespace atelier {

struct ClipTrainConfig {
  TrainSchedule schedule{.steps = 2000, .batch = 128, .warmup = 100, .grad_clip = 1.0, .checkpoint_every = 250};
  ClipConfig model;
  double lr = 1e-3;
  double weight_decay = 0.1;
  std::int64_t seed = 0;
  double glyph_fraction = 0.3;
  double rotated_fraction = 0.5;
  double prompt_fraction = 0.5;
  double noise_aug = 0.1;
  // The zero-shot validation set: the shipped DiT's training data (its `data` block).
  ShapesData zero_shot{.classes = {"circle", "square", "triangle", "star", "cross", "ring", "heart"},
                       .glyphs = {},
                       .styles = {"flat"},
                       .min_scale = 0.55,
                       .max_scale = 0.85,
                       .jitter = 0.08,
                       .rotation = 0,
                       .plain_backgrounds = true};
  std::int64_t zero_shot_samples = 512;
  std::int64_t val_samples = 256;
  std::int64_t eval_every = 500;
  std::string output = "clip.safetensors";

  template <class V>
  void fields(V& v) {
    schedule.fields(v);
    model.fields(v);
    v("lr", lr, "AdamW learning rate (cosine decay to 0 after the warm-up)", Range{0, 1});
    v("weight_decay", weight_decay, "AdamW weight decay of weight matrices (not of gains, biases, logit scale)",
      Range{0, 1});
    v("seed", seed, "seed of the initialisation, training data and augmentation", Range{0, 9e15});
    v("glyph_fraction", glyph_fraction, "fraction of training images that are concept glyphs", Range{0, 1});
    v("rotated_fraction", rotated_fraction, "fraction of training images at any angle (the rest upright)", Range{0, 1});
    v("prompt_fraction", prompt_fraction, "fraction of training captions replaced by a short prompt", Range{0, 1});
    v("noise_aug", noise_aug, "max std of Gaussian noise added to training images", Range{0, 2});
    zero_shot.fields(v);  // the zero-shot validation set (test split)
    v("zero_shot_samples", zero_shot_samples, "zero-shot validation images (test split)", Range{1, 1e6});
    v("val_samples", val_samples, "caption retrieval images (val split)", Range{2, 1e5});
    v("eval_every", eval_every, "steps between validation runs", Range{1, 1e8});
    v("output", output, "weights file written in the run folder", OutputFile{".safetensors"});
  }
};
void train_clip(const ClipTrainConfig& config, JobContext& ctx);

}  // namespace atelier
