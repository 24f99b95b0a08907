#include "adapters/concept.h"
#include "adapters/finetune.h"
#include "diffusion/generate.h"
#include "diffusion/train_base.h"
#include "distill/distill_steps.h"
#include "distill/pso.h"
#include "eval/train_probe.h"
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
          return with_context(
              [&] {
                return load_adapted_model(s.model, s.adapters, s.adapter_weights, info, nullptr, s.block_weights);
              },
              "field 'model'");
        });
      });
  registry.add<FineTuneConfig>("difffit",
                               "Adapt a DiT to a Shapes target domain: DiffFit, BitFit, full fine-tuning or LoRA, "
                               "with before/after grids, adapter file and metrics",
                               &finetune_job);
  registry.add<ConceptConfig>("lora", "Teach a base DiT one concept (image folder or Shapes glyph): a new token + LoRA",
                              &lora_concept_job);
  registry.add<ConceptConfig>("ortho_lora",
                              "Teach a concept with orthogonal LoRA (frozen basis columns), so concepts merge by "
                              "summation",
                              &ortho_concept_job);
  registry.add<MergeConfig>("merge",
                            "Merge concept adapters into one standalone model with every concept's token, plus "
                            "a preview row per concept",
                            &merge_job);
  registry.add<DistillStepsConfig>("distill_steps",
                                   "Distill a base DiT into a few-step student (consistency distillation, guidance "
                                   "folded in; samples with the LCM sampler in 1-8 steps)",
                                   &distill_steps_job);
  registry.add<PsoConfig>("pso",
                          "Tune a few-step model on a handful of target images with pairwise sample optimization "
                          "(or naively, the baseline): LoRA or DiffFit adapter, before/after at 1/2/4 steps",
                          &pso_job);
}

}  // namespace atelier
