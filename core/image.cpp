#include "core/image.h"

#include <stb_image_write.h>
#include <torch/torch.h>

#include <array>
#include <cstring>
#include <opencv2/imgproc.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace atelier {
namespace {

std::uint32_t crc32(const std::uint8_t* data, std::size_t n, std::uint32_t crc = 0) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void put_be32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}

std::uint32_t get_be32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (int k = 0; k < 4; ++k) v = (v << 8) | static_cast<std::uint8_t>(s[at + k]);
  return v;
}

void check_image(const Image& image) {
  if (image.width <= 0 || image.height <= 0 || image.channels < 1 || image.channels > 4 ||
      image.pixels.size() != static_cast<std::size_t>(image.width) * image.height * image.channels)
    fail("invalid image (", image.width, "x", image.height, "x", image.channels, ", ", image.pixels.size(), " bytes)");
}

}  // namespace

Image load_image(const std::filesystem::path& path, int channels) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(path.string(), std::filesystem::exists(path, ec) ? ": not a regular file" : ": cannot open: no such file");
  if (std::filesystem::file_size(path, ec) > (256u << 20))
    fail(path.string(), ": larger than 256 MB, not read as an image");
  return decode_image(read_file(path), path.string(), channels);
}

std::string encode_png(const Image& image, const std::map<std::string, std::string>& text) {
  check_image(image);
  std::string png;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size);
  };
  if (!stbi_write_png_to_func(sink, &png, image.width, image.height, image.channels, image.pixels.data(),
                              image.width * image.channels))
    fail("PNG encoding failed");
  if (text.empty()) return png;
  // Insert tEXt chunks right after IHDR (8-byte signature + 25-byte IHDR chunk).
  std::string chunks;
  for (const auto& [key, value] : text) {
    std::string body = "tEXt" + key + '\0' + value;
    put_be32(chunks, static_cast<std::uint32_t>(body.size() - 4));
    chunks += body;
    put_be32(chunks, crc32(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()));
  }
  png.insert(33, chunks);
  return png;
}

void save_png(const std::filesystem::path& path, const Image& image, const std::map<std::string, std::string>& text) {
  std::string png = with_context([&] { return encode_png(image, text); }, path.string());
  write_file_atomic(path, png);
}

void save_jpeg(const std::filesystem::path& path, const Image& image, int quality) {
  check_image(image);
  std::string out;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size);
  };
  if (!stbi_write_jpg_to_func(sink, &out, image.width, image.height, image.channels, image.pixels.data(), quality))
    fail(path.string(), ": JPEG encoding failed");
  write_file_atomic(path, out);
}

std::map<std::string, std::string> read_png_text(const std::filesystem::path& path) {
  std::string png = read_file(path);
  static const char kSig[] = "\x89PNG\r\n\x1a\n";
  if (png.size() < 8 || png.compare(0, 8, kSig, 8) != 0) fail(path.string(), ": not a PNG file");
  std::map<std::string, std::string> out;
  std::size_t at = 8;
  while (at + 12 <= png.size()) {
    std::uint32_t len = get_be32(png, at);
    if (len > png.size() - at - 12) fail(path.string(), ": truncated PNG chunk");
    std::string type = png.substr(at + 4, 4);
    if (type == "tEXt") {
      std::string body = png.substr(at + 8, len);
      auto nul = body.find('\0');
      if (nul != std::string::npos) out[body.substr(0, nul)] = body.substr(nul + 1);
    }
    if (type == "IEND") break;
    at += 12 + len;
  }
  return out;
}

torch::Tensor image_to_tensor(const Image& image) {
  check_image(image);
  auto t = torch::from_blob(const_cast<std::uint8_t*>(image.pixels.data()), {image.height, image.width, image.channels},
                            torch::kUInt8);
  return t.permute({2, 0, 1}).to(torch::kFloat).div(127.5).sub(1.0).contiguous();  // [C, H, W]
}

Image tensor_to_image(const torch::Tensor& chw) {
  if (chw.dim() != 3 || chw.size(0) < 1 || chw.size(0) > 4)
    fail("expected an image tensor [C, H, W] with 1-4 channels, got ", chw.sizes());
  auto t = chw.detach().to(torch::kCPU, torch::kFloat).add(1.0).mul(127.5).round().clamp(0, 255).to(torch::kUInt8);
  t = t.permute({1, 2, 0}).contiguous();  // [H, W, C]
  Image img;
  img.height = static_cast<int>(t.size(0));
  img.width = static_cast<int>(t.size(1));
  img.channels = static_cast<int>(t.size(2));
  img.pixels.assign(t.data_ptr<std::uint8_t>(), t.data_ptr<std::uint8_t>() + t.numel());
  return img;
}

Image resize_image(const Image& image, int width, int height) {
  check_image(image);
  cv::Mat src(image.height, image.width, CV_8UC(image.channels), const_cast<std::uint8_t*>(image.pixels.data()));
  cv::Mat dst;
  cv::resize(src, dst, cv::Size(width, height), 0, 0, width < image.width ? cv::INTER_AREA : cv::INTER_LINEAR);
  Image out{width, height, image.channels, {}};
  out.pixels.assign(dst.data, dst.data + dst.total() * dst.elemSize());
  return out;
}

Image make_grid(const torch::Tensor& images, const GridOptions& o) {
  if (images.dim() != 4) fail("make_grid expects [N, C, H, W], got ", images.sizes());
  const int n = static_cast<int>(images.size(0));
  const int cols = std::max(1, std::min(o.columns, std::max(n, 1)));
  const int rows = (n + cols - 1) / cols;
  const int cell_h = static_cast<int>(images.size(2)) * o.scale, cell_w = static_cast<int>(images.size(3)) * o.scale;
  const int font = cv::FONT_HERSHEY_SIMPLEX;
  const double font_scale = 0.35;
  int label_w = 0, label_h = 0, title_h = 0;
  for (const auto& l : o.row_labels)
    label_w = std::max(label_w, cv::getTextSize(l, font, font_scale, 1, nullptr).width + 6);
  if (!o.column_labels.empty()) label_h = 14;
  if (!o.title.empty()) title_h = 16;
  const int width = label_w + cols * (cell_w + o.padding) + o.padding;
  const int height = title_h + label_h + rows * (cell_h + o.padding) + o.padding;
  cv::Mat canvas(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  auto text = [&](const std::string& s, int x, int y) {
    cv::putText(canvas, s, {x, y}, font, font_scale, cv::Scalar(20, 20, 20), 1, cv::LINE_AA);
  };
  if (!o.title.empty()) text(o.title, 3, 12);
  for (int c = 0; c < cols && c < static_cast<int>(o.column_labels.size()); ++c)
    text(o.column_labels[c], label_w + o.padding + c * (cell_w + o.padding), title_h + 11);
  for (int i = 0; i < n; ++i) {
    Image cell = tensor_to_image(images[i].narrow(0, 0, std::min<std::int64_t>(images.size(1), 3)));
    cv::Mat m(cell.height, cell.width, CV_8UC(cell.channels), cell.pixels.data());
    if (cell.channels == 1) cv::cvtColor(m, m, cv::COLOR_GRAY2RGB);
    if (o.scale != 1) cv::resize(m, m, cv::Size(cell_w, cell_h), 0, 0, cv::INTER_NEAREST);
    int r = i / cols, c = i % cols;
    m.copyTo(canvas(cv::Rect(label_w + o.padding + c * (cell_w + o.padding),
                             title_h + label_h + o.padding + r * (cell_h + o.padding), cell_w, cell_h)));
  }
  for (int r = 0; r < rows && r < static_cast<int>(o.row_labels.size()); ++r)
    text(o.row_labels[r], 3, title_h + label_h + o.padding + r * (cell_h + o.padding) + cell_h / 2 + 4);
  Image out{width, height, 3, {}};
  out.pixels.assign(canvas.data, canvas.data + canvas.total() * canvas.elemSize());
  return out;
}

}  // namespace atelier
