#include "core/training_state.h"

#include "core/translated_load.h"

#include <algorithm>
#include <regex>

#include "core/error.h"
#include "core/safetensors.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {
fs::path checkpoint_dir(const fs::path& run_dir) {
  return run_dir / "checkpoints";
}

std::vector<std::pair<std::int64_t, fs::path>> list_checkpoints(const fs::path& run_dir) {
  std::vector<std::pair<std::int64_t, fs::path>> out;
  static const std::regex pattern(R"(step_(\d{1,17})\.safetensors)");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir(run_dir), ec)) {
    std::smatch m;
    std::string name = entry.path().filename().string();
    if (std::regex_match(name, m, pattern)) out.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}
// 64-bit FNV-1a over each tensor's name, dtype, shape and bytes (name order): detects truncated or
// flipped checkpoint bytes. Not a defence against deliberate tampering.
std::string content_checksum(const TensorMap& tensors) {
  std::uint64_t h = 1469598103934665603ull;
  auto feed = [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  for (const auto& [name, tensor] : tensors) {
    const auto t = tensor.detach().to(torch::kCPU).contiguous();
    const std::string head = name + "|" + std::string(c10::toString(t.scalar_type())) + "|" + c10::str(t.sizes());
    feed(head.data(), head.size() + 1);
    feed(t.data_ptr(), t.nbytes());
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// Reads one checkpoint and checks it: metadata, the step its name says, the content checksum.
TrainingState read_checkpoint(const fs::path& path, std::int64_t step) {
  TensorFile file = safetensors::load(path);
  auto it = file.metadata.find("atelier.training_state");
  if (it == file.metadata.end()) fail("not a training checkpoint (no atelier.training_state metadata)");
  TrainingState state;
  state.info = parse_json(it->second, "atelier.training_state");
  if (!state.info.is_object() || !state.info.contains("step") || !state.info["step"].is_number_integer())
    fail("corrupt atelier.training_state metadata");
  state.step = state.info["step"].get<std::int64_t>();
  if (state.step != step) fail("holds step ", state.step, ", not the step its name says");
  state.tensors = std::move(file.tensors);
  // (Checkpoints of earlier versions carry no checksum; they load as they are.)
  if (state.info.contains("checksum") && state.info["checksum"] != content_checksum(state.tensors))
    fail("content checksum mismatch (damaged bytes)");
  return state;
}

}  // namespace

fs::path save_training_state(const fs::path& run_dir, const TrainingState& state, int keep) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.safetensors", static_cast<long long>(state.step));
  fs::path path = checkpoint_dir(run_dir) / name;
  json info = state.info;
  info["step"] = state.step;
  info["checksum"] = content_checksum(state.tensors);
  safetensors::save(path, state.tensors, {{"atelier.training_state", json_text(info)}});
  // Rotation: checkpoints of later steps belong to a state this run no longer has (a stray file, or what
  // followed a damaged checkpoint it resumed before); of the rest, the newest `keep` stay.
  auto all = list_checkpoints(run_dir);
  std::vector<fs::path> older;
  for (const auto& [step, file] : all) {
    if (step > state.step)
      fs::remove(file);
    else if (step < state.step)
      older.push_back(file);
  }
  for (std::size_t i = 0; i + keep < older.size() + 1; ++i) fs::remove(older[i]);
  return path;
}

std::optional<TrainingState> load_latest_training_state(const fs::path& run_dir, std::vector<std::string>* notes) {
  auto all = list_checkpoints(run_dir);
  if (all.empty()) return std::nullopt;
  std::vector<std::string> problems;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      TrainingState state = read_checkpoint(it->second, it->first);
      if (notes != nullptr)
        for (const auto& p : problems) notes->push_back(p + "; resuming from step " + std::to_string(state.step));
      return state;
    } catch (const std::exception& e) {
      problems.push_back(it->second.string() + " is damaged: " + e.what());
    }
  }
  std::string list;
  for (const auto& p : problems) list += "\n  " + p;
  fail(run_dir.string(), ": no intact checkpoint to resume from:", list);
}

TensorMap module_tensors(const torch::nn::Module& module, const std::string& prefix) {
  TensorMap out;
  for (const auto& p : module.named_parameters(true)) out[prefix + p.key()] = p.value().detach();
  for (const auto& b : module.named_buffers(true)) out[prefix + b.key()] = b.value().detach();
  return out;
}

void load_module_tensors(torch::nn::Module& module, const TensorMap& tensors, const std::string& prefix,
                         const std::string& what, bool strict) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> problems;
  std::set<std::string> used;
  auto copy_into = [&](const std::string& name, torch::Tensor& target) {
    auto it = tensors.find(prefix + name);
    if (it == tensors.end()) {
      if (strict) problems.push_back("missing '" + prefix + name + "'");
      return;
    }
    used.insert(it->first);
    if (it->second.sizes() != target.sizes()) {
      std::ostringstream os;
      os << "'" << it->first << "' has shape " << it->second.sizes() << ", expected " << target.sizes();
      problems.push_back(os.str());
      return;
    }
    target.copy_(it->second);
  };
  for (auto& p : module.named_parameters(true)) copy_into(p.key(), p.value());
  for (auto& b : module.named_buffers(true)) copy_into(b.key(), b.value());
  if (strict) {
    for (const auto& [name, _] : tensors)
      if (name.rfind(prefix, 0) == 0 && !used.count(name)) problems.push_back("unexpected '" + name + "'");
  }
  if (!problems.empty()) {
    std::string msg;
    for (std::size_t i = 0; i < problems.size() && i < 12; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > 12) msg += "; ... (" + std::to_string(problems.size()) + " problems)";
    fail(what, ": ", msg);
  }
}

namespace {
// Key of a parameter in the optimizer's state map.
auto state_key(const torch::Tensor& p) {
  return static_cast<void*>(p.unsafeGetTensorImpl());
}

template <class State>
void save_moments(const State& s, TensorMap& out, const std::string& key) {
  out[key + ".step"] = torch::tensor(static_cast<std::int64_t>(s.step()));
  out[key + ".exp_avg"] = s.exp_avg();
  out[key + ".exp_avg_sq"] = s.exp_avg_sq();
  if (s.max_exp_avg_sq().defined()) out[key + ".max_exp_avg_sq"] = s.max_exp_avg_sq();
}

template <class State>
std::unique_ptr<State> load_moments(const TensorMap& t, const std::string& key, const torch::Tensor& param) {
  // Moments live where the parameter lives (a CPU checkpoint resumes on a GPU and back).
  auto moment = [&](const std::string& name) { return t.at(key + name).to(param.options(), false, true); };
  auto s = std::make_unique<State>();
  s->step(t.at(key + ".step").template item<std::int64_t>());
  s->exp_avg(moment(".exp_avg"));
  s->exp_avg_sq(moment(".exp_avg_sq"));
  if (t.count(key + ".max_exp_avg_sq")) s->max_exp_avg_sq(moment(".max_exp_avg_sq"));
  return s;
}
}  // namespace

TensorMap optimizer_tensors(torch::optim::Optimizer& opt, const std::string& prefix) {
  TensorMap out;
  std::int64_t index = 0;
  for (auto& group : opt.param_groups()) {
    for (auto& p : group.params()) {
      auto it = opt.state().find(state_key(p));
      std::string key = prefix + std::to_string(index++);
      if (it == opt.state().end()) continue;
      if (auto* s = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get()))
        save_moments(*s, out, key);
      else if (auto* a = dynamic_cast<torch::optim::AdamParamState*>(it->second.get()))
        save_moments(*a, out, key);
      else
        fail("optimizer state of this kind cannot be checkpointed (Adam/AdamW only)");
    }
  }
  return out;
}

void load_optimizer_tensors(torch::optim::Optimizer& opt, const TensorMap& tensors, const std::string& prefix) {
  bool adamw = dynamic_cast<torch::optim::AdamW*>(&opt) != nullptr;
  std::int64_t index = 0;
  for (auto& group : opt.param_groups()) {
    for (auto& p : group.params()) {
      std::string key = prefix + std::to_string(index++);
      if (!tensors.count(key + ".exp_avg")) continue;
      if (tensors.at(key + ".exp_avg").sizes() != p.sizes())
        fail("optimizer state '", key, "' does not match parameter shape ", p.sizes());
      if (adamw)
        opt.state()[state_key(p)] = load_moments<torch::optim::AdamWParamState>(tensors, key, p);
      else
        opt.state()[state_key(p)] = load_moments<torch::optim::AdamParamState>(tensors, key, p);
    }
  }
}

fs::path save_training_parts(const fs::path& run_dir, std::int64_t step, const TrainingParts& parts) {
  TrainingState s;
  s.step = step;
  for (const auto& [prefix, module] : parts.modules) {
    auto t = module_tensors(*module, prefix);
    s.tensors.insert(t.begin(), t.end());
  }
  if (parts.optimizer != nullptr) {
    auto o = optimizer_tensors(*parts.optimizer);
    s.tensors.insert(o.begin(), o.end());
  }
  if (parts.rng != nullptr) s.tensors["rng"] = parts.rng->state();
  return save_training_state(run_dir, s);
}

std::int64_t restore_training_parts(const fs::path& run_dir, const TrainingParts& parts,
                                    std::vector<std::string>* notes) {
  auto state = load_latest_training_state(run_dir, notes);
  if (!state) return 0;
  for (const auto& [prefix, module] : parts.modules) load_module_tensors(*module, state->tensors, prefix, "checkpoint");
  if (parts.optimizer != nullptr) load_optimizer_tensors(*parts.optimizer, state->tensors);
  if (parts.rng != nullptr) {
    auto it = state->tensors.find("rng");
    if (it == state->tensors.end()) fail(run_dir.string(), ": checkpoint of step ", state->step, " has no RNG state");
    parts.rng->set_state(it->second);
  }
  return state->step;
}

TensorSetImpl::TensorSetImpl(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, bool copy) {
  for (const auto& [name, t] : tensors) {
    std::string key = name;
    std::replace(key.begin(), key.end(), '.', '/');
    values.push_back(register_parameter(key, copy ? t.detach().clone() : t, !copy && t.requires_grad()));
  }
}

void ema_update(torch::nn::Module& ema, const torch::nn::Module& model, double decay) {
  torch::NoGradGuard no_grad;
  auto ema_params = ema.parameters(true);
  auto params = model.parameters(true);
  for (std::size_t i = 0; i < params.size(); ++i) ema_params[i].mul_(decay).add_(params[i].detach(), 1.0 - decay);
  auto ema_buffers = ema.buffers(true);
  auto buffers = model.buffers(true);
  for (std::size_t i = 0; i < buffers.size(); ++i) ema_buffers[i].copy_(buffers[i]);
}

FrozenParameters::FrozenParameters(torch::nn::Module& module) {
  for (auto& p : module.parameters()) {
    saved_.emplace_back(p, p.requires_grad());
    p.set_requires_grad(false);
  }
}

FrozenParameters::~FrozenParameters() {
  for (auto& [p, requires_grad] : saved_) p.set_requires_grad(requires_grad);
}

void load_translated_tensors(torch::nn::Module& module, const TensorMap& tensors,
                             const std::map<std::string, std::string>& origin, const std::string& what) {
  try {
    load_module_tensors(module, tensors, "", what, /*strict=*/true);
  } catch (const Error& e) {
    if (origin.empty()) throw;
    std::string msg = e.what();
    for (const auto& [name, original] : origin) {
      const std::string quoted = "'" + name + "'", note = " (file: '" + original + "')";
      for (auto pos = msg.find(quoted); pos != std::string::npos;
           pos = msg.find(quoted, pos + quoted.size() + note.size()))
        msg.insert(pos + quoted.size(), note);
    }
    throw Error(msg);
  }
}

}  // namespace atelier
