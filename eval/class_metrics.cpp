#include "eval/class_metrics.h"

#include <filesystem>

#include "core/error.h"
#include "eval/labels.h"
#include "eval/metrics.h"

namespace atelier {

ClassGridMetrics::ClassGridMetrics(const std::string& probe, const std::vector<std::string>& class_names,
                                   std::int64_t per_class, const shapes::Spec* domain, std::int64_t reference_samples)
    : ClassGridMetrics(probe, class_names, per_class, torch::Tensor()) {
  if (probe_ && domain != nullptr) reference_ = shapes::make_batch(*domain, 2, 0, reference_samples).images;
}

ClassGridMetrics::ClassGridMetrics(const std::string& probe, const std::vector<std::string>& class_names,
                                   std::int64_t per_class, torch::Tensor reference) {
  if (probe.empty()) return;
  if (!std::filesystem::exists(probe)) fail_field("probe", probe, " does not exist (\"\" skips metrics)");
  if (reference.defined() && reference.size(0) < 2)
    fail("ClassGridMetrics: FD needs at least 2 reference images, got ", reference.size(0));
  probe_ = load_probe(probe);
  reference_ = std::move(reference);
  for (const auto& name : class_names) {
    if (!probe_knows(name)) {
      unknown_class_ = name;
      labels_.clear();
      return;
    }
    for (std::int64_t k = 0; k < per_class; ++k) labels_.push_back(probe_label_of(name));
  }
}

double ClassGridMetrics::class_accuracy(const torch::Tensor& images) {
  if (!probe_) fail("class_accuracy: no probe");
  if (!unknown_class_.empty()) fail("class_accuracy: the probe does not know class '", unknown_class_, "'");
  return probe_accuracy(*probe_, images, torch::tensor(labels_, torch::kLong));
}

double ClassGridMetrics::fd_shapes(const torch::Tensor& images) {
  if (!probe_ || !reference_.defined()) fail("fd_shapes: no probe or no reference images");
  return atelier::fd_shapes(*probe_, images, reference_);
}

}  // namespace atelier
