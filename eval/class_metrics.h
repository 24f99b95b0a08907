// Probe metrics of generated class grids (`per_class` samples of each class, in class order): the probe
// loaded once, the probe labels of the grid and real reference images of the target domain. Shared by the
// jobs that sample a model before/after training and judge it (difffit, distill_steps, pso).
#pragma once
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "data/shapes.h"
#include "eval/probe.h"

namespace atelier {

class ClassGridMetrics {
 public:
  // `probe` empty: no probe metrics (has_probe() is false). A probe file that does not exist is an Error
  // naming the field 'probe'. With `domain`, `reference_samples` images of its test split are the FD reference.
  ClassGridMetrics(const std::string& probe, const std::vector<std::string>& class_names, std::int64_t per_class,
                   const shapes::Spec* domain, std::int64_t reference_samples);

  bool has_probe() const { return probe_.has_value(); }
  ProbeNet& probe() { return *probe_; }
  // Fraction of the grid's images whose probe label is their class (needs the probe).
  double class_accuracy(const torch::Tensor& images);
  // FD-shapes to the reference images (needs the probe and a domain).
  double fd_shapes(const torch::Tensor& images);

 private:
  std::optional<ProbeNet> probe_;
  torch::Tensor reference_;
  std::vector<std::int64_t> labels_;
};

}  // namespace atelier
