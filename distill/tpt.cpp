#include "distill/tpt.h"

#include <algorithm>
#include <cmath>

#include "core/image.h"
#include "core/training_state.h"
#include "data/augmix.h"

namespace atelier {
namespace {

// Entropy of each row's softmax: [V, K] -> [V].
torch::Tensor row_entropy(const torch::Tensor& logits) {
  auto logp = torch::log_softmax(logits, 1);
  return -(logp.exp() * logp).sum(1);
}

// Rows of `logits` with the lowest entropy: the `fraction` most confident (at least one).
torch::Tensor most_confident(const torch::Tensor& logits, double fraction) {
  const auto keep =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(logits.size(0)) * fraction));
  return std::get<1>(row_entropy(logits).topk(keep, 0, /*largest=*/false));
}

// Entropy of the views' averaged prediction (averaged in probability, computed in log space).
torch::Tensor marginal_entropy(const torch::Tensor& logits) {
  auto logp = torch::log_softmax(logits, 1);
  auto avg = torch::logsumexp(logp, 0) - std::log(static_cast<double>(logits.size(0)));
  avg = avg.clamp_min(std::log(1e-30));
  return -(avg.exp() * avg).sum();
}

}  // namespace

torch::Tensor random_views(const torch::Tensor& image, std::int64_t count, double min_crop, Rng& rng) {
  namespace F = torch::nn::functional;
  std::vector<float> theta;
  for (std::int64_t i = 0; i < count; ++i) {
    const double area = min_crop + (1.0 - min_crop) * rng.uniform();
    const double log_ratio = std::log(3.0 / 4.0) + (std::log(4.0 / 3.0) - std::log(3.0 / 4.0)) * rng.uniform();
    const double w = std::min(1.0, std::sqrt(area * std::exp(log_ratio)));
    const double h = std::min(1.0, std::sqrt(area / std::exp(log_ratio)));
    const double cx = (1.0 - w) * (2.0 * rng.uniform() - 1.0);
    const double cy = (1.0 - h) * (2.0 * rng.uniform() - 1.0);
    const double flip = rng.uniform() < 0.5 ? -1.0 : 1.0;
    theta.insert(theta.end(), {static_cast<float>(w * flip), 0.f, static_cast<float>(cx), 0.f, static_cast<float>(h),
                               static_cast<float>(cy)});
  }
  auto t = torch::tensor(theta).view({count, 2, 3}).to(image.device());
  auto batch = image.unsqueeze(0).expand({count, image.size(0), image.size(1), image.size(2)}).to(torch::kFloat);
  auto grid = F::affine_grid(t, {count, image.size(0), image.size(1), image.size(2)}, false);
  return F::grid_sample(
      batch, grid, F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false));
}

torch::Tensor augmix_views(const torch::Tensor& image, std::int64_t count, double min_crop, Rng& rng) {
  const auto crops = random_views(image, count, min_crop, rng).cpu();
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < count; ++i) {
    const auto seed = static_cast<std::uint64_t>(rng.uniform() * 9007199254740992.0);
    out.push_back(image_to_tensor(augmix(tensor_to_image(crops[i]), {}, seed)));
  }
  return torch::stack(out).to(image.device());
}

torch::Tensor tpt_probs(ClipModel& clip, const std::vector<std::string>& classes, const torch::Tensor& images,
                        const TptSettings& s, Rng& rng, const DiffusionViews& diffusion, const CancelToken* cancel) {
  clip->eval();
  const auto device = clip->logit_scale.device();
  const auto ids = clip->class_token_ids(classes);
  const torch::Tensor init = clip->initial_context(s.prompt_init).to(device);
  FrozenParameters frozen(*clip);  // only the context learns; the caller's model is left as given
  const bool diff = static_cast<bool>(diffusion);
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < images.size(0); ++i) {
    if (cancel != nullptr && cancel->requested()) throw Cancelled();
    const auto image = images[i].to(device, torch::kFloat);
    // Views: the original first, then the conventional augmentations, then (DiffTPT) the diffusion views
    // that survive the cosine filter.
    torch::Tensor features;
    {
      torch::NoGradGuard no_grad;
      const std::int64_t count = diff ? s.aug_views : s.views;
      auto views =
          torch::cat({image.unsqueeze(0), s.augment == "augmix" ? augmix_views(image, count, s.min_crop, rng)
                                                                : random_views(image, count, s.min_crop, rng)});
      features = clip->encode_image(views);
      if (diff) {
        auto generated = diffusion(image, s.diffusion_views, rng).to(device, torch::kFloat);
        auto gen_features = clip->encode_image(generated);
        // Cosine similarity of each diffusion view's zero-shot prediction to the original's.
        auto text = clip->encode_text_with_context(init, ids);
        auto scale = clip->logit_scale_exp();
        auto original = torch::softmax(scale * features.narrow(0, 0, 1).mm(text.t()), 1);
        auto generated_p = torch::softmax(scale * gen_features.mm(text.t()), 1);
        auto cosine = torch::cosine_similarity(generated_p, original.expand_as(generated_p), 1);
        const auto keep = std::max<std::int64_t>(
            1, static_cast<std::int64_t>(static_cast<double>(gen_features.size(0)) * s.cosine_keep));
        features = torch::cat({features, gen_features.index_select(0, std::get<1>(cosine.topk(keep)))});
      }
    }
    auto context = init.clone().set_requires_grad(true);
    torch::optim::AdamW opt({context}, torch::optim::AdamWOptions(s.lr).weight_decay(0.0));
    const std::int64_t steps = diff ? s.diff_steps : s.steps;
    const double fraction = diff ? s.diff_select : s.select;
    torch::Tensor chosen;
    for (std::int64_t step = 0; step < steps; ++step) {
      auto text = clip->encode_text_with_context(context, ids);
      auto logits = clip->logit_scale_exp() * features.mm(text.t());
      // The confident views are chosen once, on the first step's prediction (as TPT's code does).
      if (!chosen.defined()) chosen = most_confident(logits.detach(), fraction);
      auto loss = marginal_entropy(logits.index_select(0, chosen));
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    torch::NoGradGuard no_grad;
    auto text = clip->encode_text_with_context(context, ids);
    out.push_back(torch::softmax(clip->logit_scale_exp() * features.narrow(0, 0, 1).mm(text.t()), 1).cpu());
  }
  return torch::cat(out);
}

}  // namespace atelier
