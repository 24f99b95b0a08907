#include "adapters/ortho.h"

#include <map>

#include "core/error.h"
#include "core/rng.h"

namespace atelier {

torch::Tensor orthogonal_basis(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed);
  auto g = rng.randn({n, n}, torch::TensorOptions().dtype(torch::kDouble));
  auto [q, r] = torch::linalg_qr(g);
  return q * torch::sign(torch::diagonal(r)).unsqueeze(0);
}

LoRA create_ortho_lora(torch::nn::Module& model, const std::vector<std::string>& targets, const OrthoAllocation& a,
                       double alpha) {
  LoRA lora = LoRA::create(model, targets, {a.rank, alpha, 0.0});
  std::map<std::int64_t, torch::Tensor> bases;  // by input width
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < lora.paths().size(); ++i) {
    auto& layer = lora.layers()[i];
    if (layer->conv) fail("orthogonal LoRA on '", lora.paths()[i], "': only Linear layers are supported");
    const auto n = layer->down.size(1);
    if (a.first + a.rank > n)
      fail("orthogonal LoRA: columns ", a.first, "-", a.first + a.rank - 1, " do not fit layer '", lora.paths()[i],
           "' of input width ", n, " (lower ortho_slot or rank)");
    auto& basis = bases[n];
    if (!basis.defined()) basis = orthogonal_basis(n, a.seed);
    layer->down.copy_(basis.narrow(1, a.first, a.rank).t().to(layer->down.options()));
    layer->down.set_requires_grad(false);
  }
  return lora;
}

void check_disjoint(const std::vector<std::pair<std::string, OrthoAllocation>>& allocations) {
  for (std::size_t i = 0; i < allocations.size(); ++i)
    for (std::size_t j = i + 1; j < allocations.size(); ++j) {
      const auto& [name_a, a] = allocations[i];
      const auto& [name_b, b] = allocations[j];
      if (a.seed != b.seed) continue;
      if (a.first < b.first + b.rank && b.first < a.first + a.rank)
        fail("orthogonal adapters ", name_a, " (columns ", a.first, "-", a.first + a.rank - 1, ") and ", name_b,
             " (columns ", b.first, "-", b.first + b.rank - 1, ") share basis columns of seed ", a.seed,
             "; retrain one with another ortho_slot");
    }
}

}  // namespace atelier
