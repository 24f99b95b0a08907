#include "core/tensor_io.h"

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/torch_zip.h"

namespace atelier {

const char* format_name(FileFormat f) {
  switch (f) {
    case FileFormat::Safetensors: return "safetensors";
    case FileFormat::TorchZip: return "torch zip checkpoint";
    case FileFormat::Png: return "PNG image";
    case FileFormat::Jpeg: return "JPEG image";
    case FileFormat::Unknown: return "unknown";
  }
  return "unknown";
}

FileFormat detect_format(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open");
  char head[16] = {};
  in.read(head, sizeof head);
  auto n = in.gcount();
  if (n >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return FileFormat::TorchZip;
  if (n >= 8 && std::memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0) return FileFormat::Png;
  if (n >= 3 && std::memcmp(head, "\xFF\xD8\xFF", 3) == 0) return FileFormat::Jpeg;
  if (n >= 9) {
    std::size_t i = 8;
    while (i < static_cast<std::size_t>(n) && (head[i] == ' ' || head[i] == '\n' || head[i] == '\t' || head[i] == '\r'))
      ++i;
    if (i < static_cast<std::size_t>(n) && head[i] == '{') return FileFormat::Safetensors;
  }
  std::string ext = path.extension().string();
  if (ext == ".safetensors") return FileFormat::Safetensors;  // let the parser explain what is wrong
  if (ext == ".pt" || ext == ".pth" || ext == ".ckpt" || ext == ".bin") return FileFormat::TorchZip;
  return FileFormat::Unknown;
}

TensorFile load_tensor_file(const std::filesystem::path& path) {
  switch (detect_format(path)) {
    case FileFormat::Safetensors: return safetensors::load(path);
    case FileFormat::TorchZip: return flatten_checkpoint(load_torch_checkpoint(path));
    default: fail(path.string(), ": not a safetensors file or a torch checkpoint");
  }
}

}  // namespace atelier
