#include "adapters/adapter_file.h"

#include <openssl/evp.h>
#include <torch/torch.h>

#include <memory>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "core/training_state.h"

namespace atelier {

void save_adapter(const std::filesystem::path& path, const TensorMap& tensors, const AdapterInfo& info) {
  Metadata meta = {{"atelier.kind", "adapter"},
                   {"adapter.method", enum_name(info.method)},
                   {"adapter.base", info.base_hash},
                   {"adapter.classes", json_text(info.classes)},
                   {"adapter.settings", json_text(info.settings)},
                   {"atelier.config", json_text(info.config)}};
  safetensors::save(path, tensors, meta);
}

bool is_adapter_file(const std::filesystem::path& path) {
  if (detect_format(path) != FileFormat::Safetensors) return false;
  const safetensors::Reader reader(path);
  auto it = reader.header().metadata.find("atelier.kind");
  return it != reader.header().metadata.end() && it->second == "adapter";
}

AdapterFile load_adapter(const std::filesystem::path& path) {
  if (!is_adapter_file(path)) fail(path.string(), ": not an Atelier adapter file (no atelier.kind = adapter metadata)");
  TensorFile f = safetensors::load(path);
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(path.string(), ": adapter metadata '", key, "' missing");
    return it->second;
  };
  AdapterFile a;
  const auto method = enum_from_name<AdapterMethod>(get("adapter.method"));
  if (!method) fail(path.string(), ": unknown adapter.method '", get("adapter.method"), "'");
  a.info.method = *method;
  a.info.base_hash = get("adapter.base");
  with_context(
      [&] {
        auto parse = [&](const std::string& key) { return parse_json(get(key), "metadata '" + key + "'"); };
        a.info.classes = string_list(parse("adapter.classes"), "metadata 'adapter.classes'");
        a.info.settings = parse("adapter.settings");
        a.info.config = parse("atelier.config");
      },
      path.string(), ": adapter metadata");
  a.tensors = std::move(f.tensors);
  return a;
}

std::string model_hash(const torch::nn::Module& module) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail("SHA-256 is unavailable");
  auto feed = [&](const void* data, std::size_t n) { EVP_DigestUpdate(ctx.get(), data, n); };
  for (const auto& [name, tensor] : module_tensors(module)) {  // TensorMap: sorted by name
    const auto t = tensor.detach().to(torch::kCPU).contiguous();
    const std::string head = name + "|" + std::string(c10::toString(t.scalar_type())) + "|" + c10::str(t.sizes());
    feed(head.data(), head.size() + 1);
    feed(t.data_ptr(), t.nbytes());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

}  // namespace atelier
