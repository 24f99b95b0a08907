#include "eval/metrics.h"

#include <algorithm>

#include "core/error.h"

namespace atelier {

torch::Tensor probe_features(ProbeNet& probe, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  probe->eval();
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < images.size(0); i += 256)
    out.push_back(probe->features(images.slice(0, i, std::min(images.size(0), i + 256))));
  return torch::cat(out);
}

torch::Tensor probe_predict(ProbeNet& probe, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  probe->eval();
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < images.size(0); i += 256)
    out.push_back(probe->forward(images.slice(0, i, std::min(images.size(0), i + 256))).first.argmax(1));
  return torch::cat(out);
}

double frechet_distance(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(1))
    fail("frechet_distance: feature sets must be [N, F] of one F");
  if (a.size(0) < 2 || b.size(0) < 2) fail("frechet_distance: need at least 2 samples per set");
  auto fa = a.to(torch::kDouble), fb = b.to(torch::kDouble);
  auto mu_a = fa.mean(0), mu_b = fb.mean(0);
  auto cov = [](const torch::Tensor& f, const torch::Tensor& mu) {
    auto c = f - mu;
    return c.t().matmul(c) / static_cast<double>(f.size(0) - 1);
  };
  auto sa = cov(fa, mu_a), sb = cov(fb, mu_b);
  // Tr((S_a S_b)^1/2) = sum sqrt(eig(S_a^1/2 S_b S_a^1/2)), all symmetric PSD.
  auto [ea, va] = torch::linalg_eigh(sa);
  auto sqrt_a = va.matmul(torch::diag(ea.clamp_min(0).sqrt())).matmul(va.t());
  auto m = sqrt_a.matmul(sb).matmul(sqrt_a);
  auto em = torch::linalg_eigvalsh((m + m.t()) / 2).clamp_min(0).sqrt().sum();
  auto fd = (mu_a - mu_b).pow(2).sum() + sa.trace() + sb.trace() - 2 * em;
  return fd.item<double>();
}

double fd_shapes(ProbeNet& probe, const torch::Tensor& generated, const torch::Tensor& reference) {
  return frechet_distance(probe_features(probe, generated), probe_features(probe, reference));
}

double sharpness(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  auto x = (images.to(torch::kFloat) + 1) * 127.5;
  auto grey = (0.299 * x.select(1, 0) + 0.587 * x.select(1, 1) + 0.114 * x.select(1, 2)).unsqueeze(1);
  auto kernel = torch::tensor({0.f, 1.f, 0.f, 1.f, -4.f, 1.f, 0.f, 1.f, 0.f}).view({1, 1, 3, 3});
  auto lap = torch::conv2d(grey, kernel);  // valid region, [N, 1, H-2, W-2]
  return lap.flatten(1).var(1).mean().item<double>();
}

double patch_texture(const torch::Tensor& images, std::int64_t patch) {
  if (images.dim() != 4) fail("patch_texture: images must be [N, C, H, W], got ", images.sizes());
  if (patch < 2 || images.size(2) <= patch || images.size(3) <= patch)
    fail("patch_texture: patch size ", patch, " must be at least 2 and smaller than the images (", images.size(2), "x",
         images.size(3), ")");
  torch::NoGradGuard no_grad;
  auto x = images.to(torch::kDouble);
  double across = 0, within = 0;
  std::int64_t n_across = 0, n_within = 0;
  for (std::int64_t dim : {2, 3}) {
    const auto len = x.size(dim);
    auto d2 = (x.narrow(dim, 1, len - 1) - x.narrow(dim, 0, len - 1)).pow(2);  // d2[i]: pixels i and i+1
    auto boundary = torch::zeros({len - 1}, torch::kBool);
    for (std::int64_t i = patch - 1; i < len - 1; i += patch) boundary[i] = true;
    auto shape = std::vector<std::int64_t>(4, 1);
    shape[dim] = len - 1;
    auto mask = boundary.view(shape).expand_as(d2);
    across += d2.masked_select(mask).sum().item<double>();
    within += d2.masked_select(~mask).sum().item<double>();
    const auto per_line = d2.numel() / (len - 1);
    const auto b = boundary.sum().item<std::int64_t>();
    n_across += b * per_line;
    n_within += (len - 1 - b) * per_line;
  }
  constexpr double kTiny = 1e-12;  // flat images: no edges anywhere reads as no texture (1)
  return (across / n_across + kTiny) / (within / n_within + kTiny);
}

double probe_accuracy(ProbeNet& probe, const torch::Tensor& images, const torch::Tensor& labels) {
  return probe_predict(probe, images).eq(labels.to(torch::kLong)).to(torch::kDouble).mean().item<double>();
}

double feature_cosine(ProbeNet& probe, const torch::Tensor& images, const torch::Tensor& reference) {
  auto f = probe_features(probe, images);
  auto r = probe_features(probe, reference).mean(0, true);
  return torch::cosine_similarity(f, r, 1).mean().item<double>();
}

double psnr(const torch::Tensor& a, const torch::Tensor& b) {
  torch::NoGradGuard no_grad;
  auto mse = (a.to(torch::kDouble) - b.to(torch::kDouble)).pow(2).flatten(1).mean(1).clamp_min(1e-12);
  return (10.0 * torch::log10(4.0 / mse)).mean().item<double>();
}

std::vector<std::int64_t> kmeans_representatives(const torch::Tensor& features, std::int64_t k, Rng& rng,
                                                 int iterations) {
  torch::NoGradGuard no_grad;
  auto x = features.to(torch::kCPU, torch::kDouble);
  const auto n = x.size(0);
  k = std::min(k, n);
  if (k <= 0) return {};
  // k-means++: each next centre drawn with probability proportional to the squared distance to the
  // nearest centre chosen so far.
  std::vector<std::int64_t> seeds{rng.randint(n, {1}).item<std::int64_t>()};
  auto d2 = (x - x[seeds[0]]).pow(2).sum(1);
  while (static_cast<std::int64_t>(seeds.size()) < k) {
    const double total = d2.sum().item<double>();
    std::int64_t next = 0;
    if (total <= 0) {  // all remaining points coincide with centres: take the first unused one
      while (std::find(seeds.begin(), seeds.end(), next) != seeds.end()) ++next;
    } else {
      const double u = rng.rand({1}).item<double>() * total;
      next = std::min<std::int64_t>(n - 1, (d2.cumsum(0) < u).sum().item<std::int64_t>());
    }
    seeds.push_back(next);
    d2 = torch::minimum(d2, (x - x[next]).pow(2).sum(1));
  }
  auto centres = x.index_select(0, torch::tensor(seeds));
  torch::Tensor assign;
  for (int it = 0; it < iterations; ++it) {
    auto next_assign = torch::cdist(x, centres).argmin(1);
    if (assign.defined() && next_assign.equal(assign)) break;
    assign = next_assign;
    for (std::int64_t c = 0; c < k; ++c) {
      auto members = (assign == c).nonzero().squeeze(1);
      if (members.numel() > 0) centres[c] = x.index_select(0, members).mean(0);
    }
  }
  // The sample nearest each centre, each used once (a later cluster takes its next-nearest free sample).
  auto dist = torch::cdist(centres, x);
  std::vector<bool> used(static_cast<std::size_t>(n), false);
  std::vector<std::int64_t> picked;
  for (std::int64_t c = 0; c < k; ++c) {
    auto order = dist[c].argsort();
    for (std::int64_t j = 0; j < n; ++j) {
      const auto i = order[j].item<std::int64_t>();
      if (!used[static_cast<std::size_t>(i)]) {
        used[static_cast<std::size_t>(i)] = true;
        picked.push_back(i);
        break;
      }
    }
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

}  // namespace atelier
