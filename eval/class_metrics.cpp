#include "eval/class_metrics.h"

#include <filesystem>

#include "core/error.h"
#include "eval/labels.h"
#include "eval/metrics.h"

namespace atelier {

ClassGridMetrics::ClassGridMetrics(const std::string& probe, const std::vector<std::string>& class_names,
                                   std::int64_t per_class, const shapes::Spec* domain, std::int64_t reference_samples) {
  if (probe.empty()) return;
  if (!std::filesystem::exists(probe)) fail_field("probe", probe, " does not exist (\"\" skips metrics)");
  probe_ = load_probe(probe);
  if (domain != nullptr) reference_ = shapes::make_batch(*domain, 2, 0, reference_samples).images;
  for (const auto& name : class_names)
    for (std::int64_t k = 0; k < per_class; ++k) labels_.push_back(probe_label_of(name));
}

double ClassGridMetrics::class_accuracy(const torch::Tensor& images) {
  if (!probe_) fail("class_accuracy: no probe");
  return probe_accuracy(*probe_, images, torch::tensor(labels_, torch::kLong));
}

double ClassGridMetrics::fd_shapes(const torch::Tensor& images) {
  if (!probe_ || !reference_.defined()) fail("fd_shapes: no probe or no reference domain");
  return atelier::fd_shapes(*probe_, images, reference_);
}

}  // namespace atelier
