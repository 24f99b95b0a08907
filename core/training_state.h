// Checkpoints of a training run: model, optimizer, EMA and RNG tensors in one safetensors file, plus
// JSON info (step, data position, config) in its metadata, written atomically to
// <run>/checkpoints/step_<N>.safetensors. Resume loads the newest complete one.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/rng.h"
#include "core/tensor_map.h"

namespace atelier {

struct TrainingState {
  std::int64_t step = 0;
  TensorMap tensors;
  json info = json::object();
};

// Writes the checkpoint with a checksum of its content, removes checkpoints of later steps (a state the
// run no longer has) and keeps the newest `keep` of the rest. Returns its path.
std::filesystem::path save_training_state(const std::filesystem::path& run_dir, const TrainingState& state,
                                          int keep = 2);
// The newest intact checkpoint (metadata readable, checksum matching): a truncated or damaged newer one is
// skipped and said in `notes`; Error listing every problem when none is intact; nullopt when there is none.
std::optional<TrainingState> load_latest_training_state(const std::filesystem::path& run_dir,
                                                        std::vector<std::string>* notes = nullptr);

// Parameters and buffers of a module under `prefix` (no prefix separator added: pass "ema." etc).
TensorMap module_tensors(const torch::nn::Module& module, const std::string& prefix = "");
// Copies tensors into the module's parameters/buffers. With `strict`, every missing, unexpected and
// wrong-shape key is collected and reported in one Error (naming `what`, e.g. the file).
void load_module_tensors(torch::nn::Module& module, const TensorMap& tensors, const std::string& prefix,
                         const std::string& what, bool strict = true);

// Adam/AdamW moments and step counts, by parameter index within the optimizer's groups.
TensorMap optimizer_tensors(torch::optim::Optimizer& opt, const std::string& prefix = "optim.");
void load_optimizer_tensors(torch::optim::Optimizer& opt, const TensorMap& tensors,
                            const std::string& prefix = "optim.");

// Everything a training loop checkpoints: modules under key prefixes, the optimizer and the RNG.
struct TrainingParts {
  std::vector<std::pair<std::string, torch::nn::Module*>> modules;  // e.g. {"model.", &model}, {"ema.", &ema}
  torch::optim::Optimizer* optimizer = nullptr;
  Rng* rng = nullptr;
};
// Saves the parts at `step` (save_training_state); returns the checkpoint's path.
std::filesystem::path save_training_parts(const std::filesystem::path& run_dir, std::int64_t step,
                                          const TrainingParts& parts);
// Restores the parts from the newest intact checkpoint; returns its step, or 0 when the run has none.
// Damaged checkpoints skipped on the way are said in `notes`.
std::int64_t restore_training_parts(const std::filesystem::path& run_dir, const TrainingParts& parts,
                                    std::vector<std::string>* notes = nullptr);

// A module view over named tensors ('.' in names becomes '/'), so any set of tensors (a subset of a
// network, LoRA factors, their EMA) checkpoints through TrainingParts. `copy`: own clones, not views.
class TensorSetImpl : public torch::nn::Module {
 public:
  TensorSetImpl(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, bool copy);
  std::vector<torch::Tensor> values;
};
TORCH_MODULE(TensorSet);

// Runs `f` with `from`'s values (an EMA, say) in `into`'s tensors, then puts `into`'s own values back; both
// sets hold the same tensors in the same order.
template <class F>
void with_values_of(TensorSetImpl& into, const TensorSetImpl& from, F&& f) {
  std::vector<torch::Tensor> kept;
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < into.values.size(); ++i) {
      kept.push_back(into.values[i].detach().clone());
      into.values[i].detach().copy_(from.values[i]);
    }
  }
  f();
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < into.values.size(); ++i) into.values[i].detach().copy_(kept[i]);
}

// Exponential moving average of a module's parameters (buffers copied).
void ema_update(torch::nn::Module& ema, const torch::nn::Module& model, double decay);

// A module's parameters frozen (requires_grad false) for the scope, restored after: a function that
// differentiates through a caller's model (w.r.t. its inputs only) leaves the model as it was given.
class FrozenParameters {
 public:
  explicit FrozenParameters(torch::nn::Module& module);
  ~FrozenParameters();
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<std::pair<torch::Tensor, bool>> saved_;
};

}  // namespace atelier
