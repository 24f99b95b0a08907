#include "adapters/tuning.h"

#include <set>

#include "core/error.h"
#include "core/training_state.h"

namespace atelier {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool is_lora_tensor(const std::string& name) {
  return ends_with(name, ".lora_A.weight") || ends_with(name, ".lora_B.weight") || ends_with(name, ".alpha");
}

DiTBlockImpl& block_at(DiT& model, std::int64_t i) {
  return *model->blocks[static_cast<std::size_t>(i)]->as<DiTBlockImpl>();
}

LoRAOptions lora_options(const json& settings) {
  LoRAOptions o;
  o.rank = settings.value("lora_rank", std::int64_t{8});
  o.alpha = settings.value("lora_alpha", 8.0);
  return o;
}

}  // namespace

AdapterMethod adapter_method(TuneMethod m) {
  return *enum_from_name<AdapterMethod>(enum_name(m));
}

std::vector<std::int64_t> gamma_block_indices(const std::string& spec, std::int64_t depth) {
  std::int64_t first = 0, last = -1;
  if (spec == "first_half") {  // 14 of DiT-XL's 28 blocks; at least one
    last = (depth + 1) / 2 - 1;
  } else if (spec == "all") {
    last = depth - 1;
  } else if (spec != "none") {
    const auto dash = spec.find('-');
    try {
      std::size_t used = 0;
      first = std::stoll(spec.substr(0, dash), &used);
      if (used != (dash == std::string::npos ? spec.size() : dash)) throw std::invalid_argument(spec);
      last = dash == std::string::npos ? first : std::stoll(spec.substr(dash + 1), &used);
      if (dash != std::string::npos && used != spec.size() - dash - 1) throw std::invalid_argument(spec);
    } catch (const std::logic_error&) {
      fail_field("gamma_blocks", "'", spec, "' is not first_half, all, none or a range such as 0-6");
    }
    if (first < 0 || last < first || last >= depth)
      fail_field("gamma_blocks", "'", spec, "' is outside the model's blocks 0-", depth - 1);
  }
  std::vector<std::int64_t> out;
  for (auto i = first; i <= last; ++i) out.push_back(i);
  return out;
}

void add_gammas(DiT& model, const std::vector<std::int64_t>& blocks, const std::vector<std::string>& branches) {
  const auto d = model->config().hidden_size;
  const auto opts = model->pos_embed.options();
  for (const auto& b : branches)
    if (b != "attn" && b != "mlp") fail_field("gamma_branches", "'", b, "' is not one of: attn, mlp");
  for (auto i : blocks) {
    auto& block = block_at(model, i);
    for (const auto& b : branches) {
      auto& slot = b == "attn" ? block.gamma_attn : block.gamma_mlp;
      if (!slot.defined()) slot = block.register_parameter("gamma_" + b, torch::ones({d}, opts));
    }
  }
}

std::int64_t Tuning::numel() const {
  std::int64_t n = lora ? lora->numel() : 0;
  for (const auto& [name, t] : tensors) n += t.numel();
  return n;
}

TensorMap Tuning::adapter_tensors() const {
  TensorMap out = lora ? lora->tensors() : TensorMap{};
  for (const auto& [name, t] : tensors) out[name] = t.detach();
  return out;
}

TrainedTensors::TrainedTensors(const Tuning& tuning) : named(tuning.tensors), scaled(tuning.scaled_lr) {
  if (tuning.lora)
    for (std::size_t i = 0; i < tuning.lora->paths().size(); ++i) {
      named.emplace_back(tuning.lora->paths()[i] + ".lora_A.weight", tuning.lora->layers()[i]->down);
      named.emplace_back(tuning.lora->paths()[i] + ".lora_B.weight", tuning.lora->layers()[i]->up);
      scaled.insert(scaled.end(), 2, true);
    }
  live = TensorSet(named, false);
  ema = TensorSet(named, true);
}

std::unique_ptr<torch::optim::AdamW> TrainedTensors::optimizer(double lr, double lr_scale) const {
  std::vector<torch::Tensor> base_group, scaled_group;
  for (std::size_t i = 0; i < named.size(); ++i) (scaled[i] ? scaled_group : base_group).push_back(named[i].second);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto options = [](double rate) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(rate).weight_decay(0));
  };
  if (!base_group.empty()) groups.emplace_back(base_group, options(lr));
  if (!scaled_group.empty()) groups.emplace_back(scaled_group, options(lr * lr_scale));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(lr).weight_decay(0));
}

TensorMap TrainedTensors::ema_tensors(const Tuning& tuning) const {
  TensorMap tensors;
  for (std::size_t i = 0; i < named.size(); ++i) tensors[named[i].first] = ema->values[i].detach();
  if (tuning.lora)
    for (const auto& [name, t] : tuning.lora->tensors())
      if (name.size() > 6 && name.compare(name.size() - 6, 6, ".alpha") == 0) tensors[name] = t;
  return tensors;
}

Tuning prepare_tuning(DiT& model, const TuneSettings& s, Rng* init) {
  Tuning tuning;
  tuning.method = s.method;
  tuning.settings = {{"method", enum_name(s.method)}, {"input_size", model->config().input_size}};
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  if (s.method == TuneMethod::DiffFit) {
    auto blocks = gamma_block_indices(s.gamma_blocks, model->config().depth);
    add_gammas(model, blocks, s.gamma_branches);
    tuning.settings["gamma_blocks"] = blocks;
    tuning.settings["gamma_branches"] = s.gamma_branches;
  } else if (s.method == TuneMethod::LoRA) {
    tuning.lora = LoRA::create(*model, s.lora_targets, {s.lora_rank, s.lora_alpha, 0.0}, init);
    tuning.lora->attach(model->hooks(), *model);
    tuning.settings["lora_rank"] = s.lora_rank;
    tuning.settings["lora_alpha"] = s.lora_alpha;
    tuning.settings["lora_targets"] = s.lora_targets;
  }
  for (auto& item : model->named_parameters()) {
    const auto& name = item.key();
    const bool table = name == "y_embedder.embedding_table.weight";
    const bool bias = ends_with(name, ".bias");
    const bool gamma = ends_with(name, ".gamma_attn") || ends_with(name, ".gamma_mlp");
    bool train = false, scaled = false;
    switch (s.method) {
      case TuneMethod::Full: train = name != "pos_embed"; break;
      case TuneMethod::BitFit: train = scaled = bias || table; break;
      case TuneMethod::DiffFit: train = scaled = bias || table || gamma; break;
      case TuneMethod::LoRA: train = scaled = table; break;
    }
    if (!train) continue;
    item.value().set_requires_grad(true);
    tuning.tensors.emplace_back(name, item.value());
    tuning.scaled_lr.push_back(scaled);
  }
  return tuning;
}

void retarget_labels(DiT& model, const std::vector<std::string>& base, const std::vector<std::string>& target, Rng& rng,
                     LabelInit init) {
  const auto& old = model->y_table->weight;
  const auto d = old.size(1);
  const bool has_null = model->config().class_dropout_prob > 0;
  auto table = rng.randn({static_cast<std::int64_t>(target.size()) + (has_null ? 1 : 0), d}) * 0.02;
  torch::NoGradGuard no_grad;
  table = table.to(old.options());
  const std::int64_t base_classes = static_cast<std::int64_t>(base.size());
  for (std::size_t i = 0; i < target.size(); ++i) {
    const auto row = static_cast<std::int64_t>(i);
    if (auto it = std::find(base.begin(), base.end(), target[i]); it != base.end())
      table[row].copy_(old[it - base.begin()]);
    else if (init == LabelInit::Mean && base_classes > 0)
      table[row].copy_(old.slice(0, 0, base_classes).mean(0));
    else if (init == LabelInit::Null && has_null)
      table[row].copy_(old[old.size(0) - 1]);
  }
  if (has_null) table[-1].copy_(old[old.size(0) - 1]);
  model->set_label_table(table);
}

std::optional<LoRA> apply_adapter(DiT& model, DiTModelInfo& info, const AdapterFile& adapter,
                                  const std::string& adapter_source, const std::string& base_source,
                                  const std::string& hash, double weight) {
  const auto& a = adapter.info;
  if (hash != a.base_hash)
    fail(adapter_source, ": adapter for base model ", a.base_hash.substr(0, 12), "..., but ", base_source, " is ",
         hash.substr(0, 12), "... (a different model)");
  const auto& s = a.settings;
  if (auto size = s.value("input_size", model->config().input_size); size != model->config().input_size)
    model->set_input_size(size, static_cast<double>(model->config().input_size / model->config().patch_size));
  TensorMap dit_tensors;
  for (const auto& [name, t] : adapter.tensors)
    if (!is_lora_tensor(name) && name != "concept.embedding") dit_tensors[name] = t;
  if (auto it = adapter.tensors.find("concept.embedding"); it != adapter.tensors.end()) {
    // A concept's token: a new label row before the null row.
    if (a.classes.size() != 1) fail(adapter_source, ": a concept adapter names exactly one class");
    if (std::find(info.class_names.begin(), info.class_names.end(), a.classes[0]) != info.class_names.end())
      fail(adapter_source, ": concept '", a.classes[0], "' is already a class of the model (applied twice?)");
    model->add_class(it->second);
    info.class_names.push_back(a.classes[0]);
  }
  if (auto it = dit_tensors.find("y_embedder.embedding_table.weight"); it != dit_tensors.end()) {
    model->set_label_table(it->second);
    info.class_names = a.classes;
    info.dit.num_classes = model->config().num_classes;
  }
  if (s.contains("gamma_blocks"))
    add_gammas(model, s.at("gamma_blocks").get<std::vector<std::int64_t>>(),
               s.at("gamma_branches").get<std::vector<std::string>>());
  auto params = model->named_parameters();
  for (const auto& [name, t] : dit_tensors) {
    auto* p = params.find(name);
    if (p == nullptr) fail(adapter_source, ": tensor '", name, "' names no parameter of the base model");
    if (p->sizes() != t.sizes())
      fail(adapter_source, ": tensor '", name, "' has shape ", t.sizes(), ", the model's is ", p->sizes());
    torch::NoGradGuard no_grad;
    p->copy_(t);
  }
  info.dit = model->config();
  if (!carries_lora(a.method)) return std::nullopt;
  TensorMap lora_tensors;
  for (const auto& [name, t] : adapter.tensors)
    if (is_lora_tensor(name)) lora_tensors[name] = t;
  LoRA lora = LoRA::from_tensors(*model, lora_tensors, lora_options(s), adapter_source);
  lora.to(model->pos_embed.device());
  lora.attach(model->hooks(), *model, weight);
  return lora;
}

DiT fold_adapters(DiT& model, const std::vector<std::pair<LoRA, double>>& loras) {
  DiT plain(model->config());
  load_module_tensors(*plain, folded_tensors(model, loras), "", "folded model");
  return plain;
}

TensorMap folded_tensors(DiT& model, const std::vector<std::pair<LoRA, double>>& loras) {
  TensorMap out;
  for (const auto& [name, t] : module_tensors(*model))
    if (!ends_with(name, ".gamma_attn") && !ends_with(name, ".gamma_mlp")) out[name] = t.clone();
  const auto d = model->config().hidden_size;
  for (std::int64_t i = 0; i < model->config().depth; ++i) {
    auto& block = block_at(model, i);
    const std::string ada = "blocks." + std::to_string(i) + ".adaLN_modulation.1.";
    auto fold = [&](const torch::Tensor& gamma, std::int64_t chunk) {  // gate rows [chunk*D, (chunk+1)*D)
      if (!gamma.defined()) return;
      auto g = gamma.detach();
      out[ada + "weight"].narrow(0, chunk * d, d).mul_(g.unsqueeze(1));
      out[ada + "bias"].narrow(0, chunk * d, d).mul_(g);
    };
    fold(block.gamma_attn, 2);
    fold(block.gamma_mlp, 5);
  }
  add_lora_updates(loras, [&](const std::string& path) { return out.at(path + ".weight"); });
  return out;
}

}  // namespace atelier
