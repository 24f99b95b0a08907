#include "adapters/concept.h"
#include "adapters/finetune.h"
#include "adapters/lora_files.h"
#include "adapters/sd_tuning.h"
#include "diffusion/generate.h"
#include "diffusion/stable_diffusion.h"
#include "diffusion/train_base.h"
#include "distill/distill_steps.h"
#include "distill/e2gan.h"
#include "distill/e2gan_export.h"
#include "distill/pso.h"
#include "distill/tta.h"
#include "eval/train_clip.h"
#include "eval/train_probe.h"
#include "studio/job_registry.h"

namespace atelier {

void register_builtin_jobs(JobRegistry& registry) {
  registry.add<ProbeConfig>("train_probe",
                            "Train the Shapes probe (classes, concept glyphs, styles): the metric network behind "
                            "FD-shapes and classifier accuracy",
                            &train_probe);
  registry.add<ClipTrainConfig>("train_clip",
                                "Train the Shapes CLIP dual encoder on images and captions (symmetric InfoNCE): the "
                                "zero-shot classifier of test-time prompt tuning",
                                &train_clip);
  registry.add<TrainBaseConfig>(
      "train_base",
      "Train a class-conditional DiT on Shapes or a folder of class sub-folders (AdamW, EMA, validation loss, exact "
      "resume)",
      &train_base);
  registry.add<SampleConfig>(
      "sample",
      "Sample a grid: a DiT by class (with adapters; probe accuracy and FD-shapes on Shapes models) or Stable "
      "Diffusion by prompt (with LoRAs)",
      [](const SampleConfig& c, JobContext& ctx) {
        sample_job(
            c, ctx,
            [](const SampleConfig& s, DiTModelInfo* info) {
              return with_context(
                  [&] {
                    return load_adapted_model(s.model, s.adapters, s.adapter_weights, info, nullptr, s.block_weights);
                  },
                  "field 'model'");
            },
            [](StableDiffusionModel& sd, const SampleConfig& s) {
              apply_sd_adapters(sd, s.adapters, s.adapter_weights);
            });
      });
  registry.add<FineTuneConfig>(
      "difffit",
      "Adapt a DiT to a target domain (a Shapes domain or a folder of images): DiffFit, BitFit, full fine-tuning or "
      "LoRA, with before/after grids, adapter file and metrics; or a Stable Diffusion UNet to captioned images "
      "(DiffFit, BitFit)",
      &finetune_job);
  registry.add<ConceptConfig>("lora",
                              "Teach a base one concept: a DiT (image folder or Shapes glyph: a new token + LoRA) "
                              "or Stable Diffusion (captioned images: a UNet LoRA, written for kohya tools)",
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
  registry.add<E2GanDataConfig>("e2gan_data",
                                "Edit images with a diffusion teacher (base DiT + an edit's adapter, SDEdit) into "
                                "training pairs for E2GAN, with ground-truth restyles and k-means selection",
                                &e2gan_data_job);
  registry.add<E2GanBaseConfig>("e2gan_base",
                                "Train one E2GAN generator (convolutions + one transformer block) on the pairs of "
                                "several edits: LSGAN with a PatchGAN + L1 to the teacher",
                                &e2gan_base_job);
  registry.add<E2GanConceptConfig>("e2gan_concept",
                                   "Learn a new edit on an E2GAN base: LoRA on the crucial layers with a rank search "
                                   "(or the baselines: from scratch, full fine-tuning)",
                                   &e2gan_concept_job);
  registry.add<ExportGanConfig>("export_gan",
                                "Export an E2GAN generator with an edit folded in to ONNX and ncnn (fp32/fp16), "
                                "with a parity report against the C++ generator and single-thread latency",
                                &export_gan_job);
  registry.add<SdaConfig>("tta_sda",
                          "Synthetic-domain alignment: fine-tune a classifier on the base model's synthetic images "
                          "after DDA projection, for test-time adaptation with tta_eval",
                          &sda_job);
  registry.add<TtaEvalConfig>(
      "tta_eval",
      "Test-time adaptation of a classifier on shifted images (Shapes-C or a folder): "
      "source, DDA projection (with self-ensembling), SDA; CLIP zero-shot, TPT, DiffTPT; results table "
      "and image grid",
      &tta_eval_job);

  // The studio's names: what an artist does first, then the methods' pipelines, then tools.
  registry.present("difffit", "Adapt to a style or domain (DiffFit)", JobGroup::Customize);
  registry.present("lora", "Teach a concept (LoRA)", JobGroup::Customize);
  registry.present("ortho_lora", "Teach a mergeable concept (orthogonal LoRA)", JobGroup::Customize);
  registry.present("pso", "Tune a few-step model (PSO)", JobGroup::Customize);
  registry.present("e2gan_concept", "Learn an edit as a small GAN (E2GAN LoRA)", JobGroup::Customize);
  registry.present("distill_steps", "Make a few-step model (distillation)", JobGroup::Pipeline);
  registry.present("e2gan_data", "Edit pairs for a small GAN (E2GAN data)", JobGroup::Pipeline);
  registry.present("e2gan_base", "Train a small edit GAN (E2GAN base)", JobGroup::Pipeline);
  registry.present("export_gan", "Export a small GAN for phones (ONNX, ncnn)", JobGroup::Pipeline);
  registry.present("tta_sda", "Align a classifier to synthetic data (SDA)", JobGroup::Pipeline);
  registry.present("tta_eval", "Evaluate test-time adaptation (DDA, SDA, TPT)", JobGroup::Pipeline);
  registry.present("train_base", "Train a base model", JobGroup::Tool);
  registry.present("train_probe", "Train the metrics probe", JobGroup::Tool);
  registry.present("train_clip", "Train the Shapes CLIP", JobGroup::Tool);
  registry.present("sample", "Sample a grid", JobGroup::Tool);
  registry.present("merge", "Merge concepts into a model", JobGroup::Tool);
}

}  // namespace atelier
