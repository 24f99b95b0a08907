// Orthogonal adaptation (Po et al., CVPR 2024): every concept's LoRA down-projections are fixed to
// disjoint columns of one shared orthogonal basis per input width, and only the up-projections train.
// Then B_i^T B_j = 0 across concepts, and summing their updates (theta + sum_i lambda_i dtheta_i) does
// not make them interfere.
//
// The basis of width n and seed s, reproducible by any tool:
//   G = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
//   Q, R = torch.linalg.qr(G);  O = Q * sign(diag(R))      (columns orthonormal, signs made unique)
// A concept with allocation {seed s, first f, rank r} uses columns f .. f+r-1: down = O[:, f:f+r]^T.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "adapters/lora.h"

namespace atelier {

torch::Tensor orthogonal_basis(std::int64_t n, std::uint64_t seed);  // [n, n] float64

struct OrthoAllocation {
  std::uint64_t seed = 0;
  std::int64_t first = 0;  // first basis column
  std::int64_t rank = 0;   // columns first .. first + rank - 1
};

// A LoRA on the target layers whose down-projections are the allocation's basis columns (frozen) and
// whose up-projections start at zero (the trained part). Error when a layer is narrower than the columns.
LoRA create_ortho_lora(torch::nn::Module& model, const std::vector<std::string>& targets, const OrthoAllocation& a,
                       double alpha);

// Refuses overlapping column ranges among allocations of the same seed: Error naming both sources.
void check_disjoint(const std::vector<std::pair<std::string, OrthoAllocation>>& allocations);

}  // namespace atelier
