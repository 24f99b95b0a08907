// Images: PNG/JPEG files through stb, conversion to and from tensors, and labelled grids (OpenCV text).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/image_decode.h"
#include "core/pixels.h"

namespace atelier {

// Loads PNG/JPEG/BMP/... forcing `channels` (3 = RGB) unless 0. Throws Error naming the file.
// Images larger than core/image_decode.h's limits are refused before decoding.
Image load_image(const std::filesystem::path& path, int channels = 3);
// PNG with optional tEXt chunks (e.g. {"atelier.config": json}); written atomically.
void save_png(const std::filesystem::path& path, const Image& image,
              const std::map<std::string, std::string>& text = {});
std::string encode_png(const Image& image, const std::map<std::string, std::string>& text = {});
void save_jpeg(const std::filesystem::path& path, const Image& image, int quality = 92);
// tEXt chunks of a PNG file (used by tests and `atelier inspect` on images).
std::map<std::string, std::string> read_png_text(const std::filesystem::path& path);

// [C, H, W] float in [-1, 1]  <->  Image (values clamped, rounded).
torch::Tensor image_to_tensor(const Image& image);
Image tensor_to_image(const torch::Tensor& chw);

struct GridOptions {
  int columns = 8;
  int padding = 2;
  int scale = 1;                        // nearest-neighbour upscaling of each cell (tiny images)
  std::vector<std::string> row_labels;  // drawn left of each row
  std::vector<std::string> column_labels;
  std::string title;
};
// Lays out [N, C, H, W] images in [-1, 1] as a grid with labels.
Image make_grid(const torch::Tensor& images, const GridOptions& options = {});

// Bilinear resize (OpenCV) of an Image.
Image resize_image(const Image& image, int width, int height);

}  // namespace atelier
