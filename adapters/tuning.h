// What an adaptation of a DiT trains, and how its adapter file is applied back or folded away.
//
//   difffit  every bias, the (re-targeted) label table and new scales gamma on the attention and MLP
//            residual branches of the chosen blocks: x += gate * gamma * branch(x), gamma = 1 at start
//            (one per channel, so a trained gamma folds exactly into the adaLN gate rows); the
//            DiffFit tensors take the larger learning rate.
//   bitfit   every bias and the label table.
//   full     every parameter but the fixed positional embedding.
//   lora     LoRA factors on the target linears, plus the label table.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "core/config.h"
#include "core/rng.h"
#include "core/training_state.h"
#include "diffusion/dit.h"
#include "diffusion/model_file.h"

namespace atelier {

enum class TuneMethod { DiffFit, BitFit, Full, LoRA };
inline const EnumNames<TuneMethod>& enum_names(TuneMethod) {
  static const EnumNames<TuneMethod> names = {{TuneMethod::DiffFit, "difffit"},
                                              {TuneMethod::BitFit, "bitfit"},
                                              {TuneMethod::Full, "full"},
                                              {TuneMethod::LoRA, "lora"}};
  return names;
}
// The adapter file's method for a tuning method (the same name).
AdapterMethod adapter_method(TuneMethod m);

struct TuneSettings {
  TuneMethod method = TuneMethod::DiffFit;
  std::string gamma_blocks = "first_half";
  std::vector<std::string> gamma_branches{"attn", "mlp"};
  std::int64_t lora_rank = 8;
  double lora_alpha = 8.0;
  std::vector<std::string> lora_targets{"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};

  template <class V>
  void fields(V& v) {
    v("method", method, "what trains");
    v("gamma_blocks", gamma_blocks,
      "DiffFit: blocks with gamma scales: first_half, all, none, or a 0-based range such as 0-6");
    v("gamma_branches", gamma_branches, "DiffFit: residual branches with a gamma scale (attn, mlp)");
    v("lora_rank", lora_rank, "LoRA rank", Range{1, 4096});
    v("lora_alpha", lora_alpha, "LoRA alpha (scale = alpha / rank)", Range{0, 1e6});
    v("lora_targets", lora_targets, "LoRA target layers (path tails or globs, e.g. attn.qkv, blocks.*.mlp.fc1)");
  }
};

// Block indices carrying gamma scales; Error naming 'gamma_blocks' for a bad spec.
std::vector<std::int64_t> gamma_block_indices(const std::string& spec, std::int64_t depth);

// The trainable tensors of one adaptation.
struct Tuning {
  TuneMethod method = TuneMethod::DiffFit;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // DiT tensors by state-dict name
  std::vector<bool> scaled_lr;                                 // per entry of `tensors`: takes lr * lr_scale
  std::optional<LoRA> lora;
  json settings;  // what apply_adapter needs to rebuild the tuned model

  std::int64_t numel() const;
  TensorMap adapter_tensors() const;  // DiT tensors by name + LoRA factors
};

// The trained tensors of a Tuning by name (DiT tensors, then LoRA factors) as a live set and its EMA, both
// checkpointable TensorSets; `scaled[i]`: tensor i takes lr * lr_scale.
struct TrainedTensors {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<bool> scaled;
  TensorSet live{nullptr}, ema{nullptr};

  explicit TrainedTensors(const Tuning& tuning);
  // AdamW with two groups: lr for full fine-tuning's tensors, lr * lr_scale for the method's.
  std::unique_ptr<torch::optim::AdamW> optimizer(double lr, double lr_scale) const;
  // The EMA values (with the LoRA alphas the adapter file needs), by name: an adapter file's tensors.
  TensorMap ema_tensors(const Tuning& tuning) const;

  // Runs `f` with the EMA values in the model's trained tensors (model in eval mode), then puts the
  // live values back.
  template <class F>
  void with_ema(DiT& model, F&& f) {
    torch::NoGradGuard no_grad;
    model->eval();
    with_values_of(*live, *ema, f);
    model->train();
  }
};

// Freezes `model`, adds what the method needs (gammas, LoRA attached to the model's hooks) and marks the
// method's tensors trainable. Step-0 outputs equal the model's before the call bit for bit.
// LoRA's down-projections are drawn from `init` (the job's seeded generator).
Tuning prepare_tuning(DiT& model, const TuneSettings& settings, Rng* init = nullptr);

// Registers blocks.i.gamma_attn / gamma_mlp (ones, one per channel) on the listed blocks.
void add_gammas(DiT& model, const std::vector<std::int64_t>& blocks, const std::vector<std::string>& branches);

// How the label rows of classes new to the base start: N(0, 0.02) (DiT's initialisation), the mean of
// the base's class rows (an "average shape" to move from), or the base's null row (its unconditional
// distribution).
enum class LabelInit { Random, Mean, Null };
inline const EnumNames<LabelInit>& enum_names(LabelInit) {
  static const EnumNames<LabelInit> names = {
      {LabelInit::Random, "random"}, {LabelInit::Mean, "mean"}, {LabelInit::Null, "null"}};
  return names;
}

// Re-targets the label table to `target` class names: classes the base knows (by name) keep their
// rows, new classes start as `init` says (random rows are drawn from `rng` either way, so the stream
// after it does not depend on `init`), the null row is kept.
void retarget_labels(DiT& model, const std::vector<std::string>& base, const std::vector<std::string>& target, Rng& rng,
                     LabelInit init = LabelInit::Random);

// Applies an adapter file to its base model (`base_source` names the base in errors): checks the adapter
// was trained on a base whose model_hash is `base_hash` (the base's before any adapter), then restores input size,
// label table, gammas, trained tensors and LoRA (attached to the model's hooks, at `weight`; returned for folding).
// `info.class_names` becomes the adapter's classes.
std::optional<LoRA> apply_adapter(DiT& model, DiTModelInfo& info, const AdapterFile& adapter,
                                  const std::string& adapter_source, const std::string& base_source,
                                  const std::string& base_hash, double weight = 1.0);

// The adapted model as a plain DiT state dict (official key layout): gammas folded into the adaLN gate
// rows, attached LoRA merged at their weights. The model itself is left as it was.
TensorMap folded_tensors(DiT& model, const std::vector<std::pair<LoRA, double>>& loras);
// The same as a plain DiT on the CPU (official layout: no gammas, no LoRA hooks), ready for save_dit_model.
DiT fold_adapters(DiT& model, const std::vector<std::pair<LoRA, double>>& loras);

}  // namespace atelier
