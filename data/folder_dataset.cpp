#include "data/folder_dataset.h"

#include <torch/torch.h>

#include <algorithm>
#include <fstream>

#include "core/error.h"
#include "core/image.h"

namespace atelier {
namespace fs = std::filesystem;

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

namespace {
std::vector<fs::path> images_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && is_image_file(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read_caption(const fs::path& image) {
  fs::path txt = image;
  txt.replace_extension(".txt");
  std::ifstream in(txt);
  if (!in) return "";
  std::string caption((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!caption.empty() && std::isspace(static_cast<unsigned char>(caption.back()))) caption.pop_back();
  return caption;
}
}  // namespace

FolderDataset FolderDataset::scan(const fs::path& root) {
  if (!fs::exists(root)) fail(root.string(), ": does not exist");
  if (!fs::is_directory(root)) fail(root.string(), ": not a folder");
  FolderDataset d;
  d.root_ = root;
  std::vector<fs::path> subdirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) subdirs.push_back(e.path());
  std::sort(subdirs.begin(), subdirs.end());
  for (const auto& dir : subdirs) {
    auto images = images_in(dir);
    if (images.empty()) continue;
    d.classes_.push_back(dir.filename().string());
    for (auto& img : images)
      d.items_.push_back({img, static_cast<std::int64_t>(d.classes_.size() - 1), read_caption(img)});
  }
  if (d.items_.empty()) {
    for (auto& img : images_in(root)) d.items_.push_back({img, 0, read_caption(img)});
    // "art", "art/" and "art/." all name the class "art".
    fs::path named = fs::absolute(root).lexically_normal();
    if (!named.has_filename()) named = named.parent_path();
    if (!d.items_.empty()) d.classes_ = {named.filename().string()};
  }
  if (d.items_.empty()) fail(root.string(), ": no images (PNG, JPEG or BMP) in the folder or its class sub-folders");
  return d;
}

torch::Tensor FolderDataset::load(std::size_t index, int size, bool flip) const {
  const Item& item = items_.at(index);
  Image img = load_image(item.image, 3);
  const double scale = static_cast<double>(size) / std::min(img.width, img.height);
  const int w = std::max(size, static_cast<int>(std::lround(img.width * scale)));
  const int h = std::max(size, static_cast<int>(std::lround(img.height * scale)));
  img = resize_image(img, w, h);
  auto t = image_to_tensor(img);  // [3, h, w]
  t = t.narrow(1, (h - size) / 2, size).narrow(2, (w - size) / 2, size);
  if (flip) t = t.flip({2});
  return t.contiguous();
}

std::pair<torch::Tensor, torch::Tensor> FolderDataset::batch(const std::vector<std::size_t>& indices, int size,
                                                             Rng* rng) const {
  std::vector<torch::Tensor> images;
  std::vector<std::int64_t> labels;
  for (auto i : indices) {
    bool flip = rng != nullptr && rng->uniform() < 0.5;
    images.push_back(load(i, size, flip));
    labels.push_back(items_.at(i).label);
  }
  return {torch::stack(images), torch::tensor(labels, torch::kLong)};
}

}  // namespace atelier
