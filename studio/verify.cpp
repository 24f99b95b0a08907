#include "studio/verify.h"

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "diffusion/dit_keys.h"
#include "diffusion/vae.h"

namespace atelier {
namespace {

VerifyCheck compare(const std::string& name, const torch::Tensor& got, const torch::Tensor& want, double tolerance) {
  if (got.sizes() != want.sizes()) {
    std::ostringstream os;
    os << name << ": model output has shape " << got.sizes() << ", reference " << want.sizes();
    fail(os.str());
  }
  if (!torch::isfinite(got).all().item<bool>()) fail(name, ": the model's output is not finite (NaN or infinity)");
  VerifyCheck c;
  c.name = name;
  c.max_abs = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
  c.scale = std::max(1.0, want.to(torch::kDouble).abs().max().item<double>());
  c.passed = c.max_abs <= tolerance * c.scale;
  return c;
}

bool has(const TensorFile& f, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (!f.tensors.count(n)) return false;
  return true;
}

}  // namespace

VerifyReport verify_model(const std::filesystem::path& model, const std::filesystem::path& reference,
                          double tolerance) {
  TensorFile ref = safetensors::load(reference);
  json config = json::object();
  if (auto it = ref.metadata.find("config"); it != ref.metadata.end()) {
    config = parse_json(it->second, reference.string() + ": metadata 'config'");
    if (!config.is_object()) fail(reference.string(), ": metadata 'config' is not a JSON object");
  }
  torch::NoGradGuard no_grad;
  VerifyReport report;
  auto& checks = report.checks;
  if (has(ref, {"latents", "timesteps", "labels", "sample"})) {
    DiTLoadOptions options;
    options.num_heads = config.value("num_heads", std::int64_t{0});
    options.input_size = config.value("input_size", std::int64_t{0});
    DiTFileInfo info;
    DiT dit = load_dit(model, options, &info);
    report.warnings = info.warnings;
    auto out = dit->forward(ref.tensors.at("latents").to(torch::kFloat), ref.tensors.at("timesteps"),
                            ref.tensors.at("labels").to(torch::kLong));
    checks.push_back(compare("dit sample", out, ref.tensors.at("sample"), tolerance));
  } else if (has(ref, {"image", "mean", "logvar"}) || has(ref, {"latent", "decoded"})) {
    VAEConfig base;
    json known = json::object();
    for (const auto& f : describe<VAEConfig>())
      if (config.contains(f.name)) known[f.name] = config[f.name];
    read_config(known, base);
    AutoencoderKL vae = load_vae(model, base);
    vae->eval();
    if (has(ref, {"image", "mean", "logvar"})) {
      auto posterior = vae->encode(ref.tensors.at("image").to(torch::kFloat));
      checks.push_back(compare("vae mean", posterior.mean, ref.tensors.at("mean"), tolerance));
      checks.push_back(compare("vae logvar", posterior.logvar, ref.tensors.at("logvar"), tolerance));
    }
    if (has(ref, {"latent", "decoded"}))
      checks.push_back(compare("vae decoded", vae->decode(ref.tensors.at("latent").to(torch::kFloat)),
                               ref.tensors.at("decoded"), tolerance));
  } else {
    fail(reference.string(),
         ": no known reference layout (DiT: latents, timesteps, labels, sample; VAE: image, mean, logvar and/or "
         "latent, decoded)");
  }
  return report;
}

}  // namespace atelier
