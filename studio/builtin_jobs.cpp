#include "adapters/finetune.h"
#include "core/probe.h"
#include "diffusion/generate.h"
#include "diffusion/train_base.h"
#include "studio/job_registry.h"

namespace atelier {

void register_builtin_jobs(JobRegistry& registry) {
  registry.add<ProbeConfig>("train_probe",
                            "Train the Shapes probe (classes, concept glyphs, styles): the metric network behind "
                            "FD-shapes and classifier accuracy",
                            &train_probe);
  registry.add<TrainBaseConfig>(
      "train_base", "Train a class-conditional DiT on Shapes (AdamW, EMA, validation loss, exact resume)", &train_base);
  registry.add<SampleConfig>(
      "sample", "Sample a labelled grid from a DiT model (with adapters), with probe accuracy and FD-shapes",
      [](const SampleConfig& c, JobContext& ctx) {
        sample_job(c, ctx, [](const SampleConfig& s, DiTModelInfo* info) {
          return with_context([&] { return load_adapted_model(s.model, s.adapters, s.adapter_weights, info); },
                              "field 'model'");
        });
      });
  registry.add<FineTuneConfig>("difffit",
                               "Adapt a DiT to a Shapes target domain: DiffFit, BitFit, full fine-tuning or LoRA, "
                               "with before/after grids, adapter file and metrics",
                               &finetune_job);
}

}  // namespace atelier
