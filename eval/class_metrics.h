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
  // The same with the FD reference images given ([N, 3, H, W] in [-1, 1], N >= 2; undefined: none), e.g. a
  // folder of real images.
  ClassGridMetrics(const std::string& probe, const std::vector<std::string>& class_names, std::int64_t per_class,
                   torch::Tensor reference);

  bool has_probe() const { return probe_.has_value(); }
  // The probe knows every class (Shapes classes and glyphs; eval/labels.h), so class_accuracy means something.
  bool knows_classes() const { return has_probe() && unknown_class_.empty(); }
  // A class the probe does not know (empty when it knows them all).
  const std::string& unknown_class() const { return unknown_class_; }
  bool has_reference() const { return has_probe() && reference_.defined(); }
  std::int64_t reference_size() const { return reference_.defined() ? reference_.size(0) : 0; }
  ProbeNet& probe() { return *probe_; }
  // Fraction of the grid's images whose probe label is their class (needs the probe and knows_classes()).
  double class_accuracy(const torch::Tensor& images);
  // FD-shapes to the reference images (needs the probe and a reference).
  double fd_shapes(const torch::Tensor& images);

 private:
  std::optional<ProbeNet> probe_;
  torch::Tensor reference_;
  std::vector<std::int64_t> labels_;
  std::string unknown_class_;
};

}  // namespace atelier
