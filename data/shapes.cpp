#include "data/shapes.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace atelier::shapes {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kSupersample = 4;

// Per-sample generator: splitmix64 over (seed, split, index), independent of LibTorch.
class SampleRng {
 public:
  SampleRng(std::uint64_t seed, int split, std::int64_t index)
      : state_(seed * 0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(split) << 56) ^
               static_cast<std::uint64_t>(index) * 0xD1B54A32D192ED03ull) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }

 private:
  std::uint64_t state_;
};

const std::vector<cv::Vec3b>& palette() {
  static const std::vector<cv::Vec3b> colors = {
      {220, 40, 40},  {245, 140, 20}, {235, 205, 30}, {40, 170, 60},
      {30, 190, 200}, {40, 80, 220},  {140, 60, 200}, {235, 90, 170},
  };
  return colors;
}

using Poly = std::vector<cv::Point2d>;

Poly regular(int n, double radius, double phase) {
  Poly p;
  for (int i = 0; i < n; ++i) {
    double a = phase + 2 * kPi * i / n;
    p.emplace_back(radius * std::cos(a), radius * std::sin(a));
  }
  return p;
}

Poly star_points() {
  Poly p;
  for (int i = 0; i < 10; ++i) {
    double r = i % 2 == 0 ? 1.0 : 0.45, a = -kPi / 2 + kPi * i / 5;
    p.emplace_back(r * std::cos(a), r * std::sin(a));
  }
  return p;
}

Poly cross_points() {
  const double w = 0.34;
  return {{-w, -1}, {w, -1}, {w, -w}, {1, -w}, {1, w}, {w, w}, {w, 1}, {-w, 1}, {-w, w}, {-1, w}, {-1, -w}, {-w, -w}};
}

Poly heart_points() {
  Poly p;
  for (int i = 0; i < 64; ++i) {
    double t = 2 * kPi * i / 64;
    double x = 16 * std::pow(std::sin(t), 3);
    double y = 13 * std::cos(t) - 5 * std::cos(2 * t) - 2 * std::cos(3 * t) - std::cos(4 * t);
    p.emplace_back(x / 17.0, -(y + 2.5) / 17.0);
  }
  return p;
}

Poly bolt_points() {
  return {{0.15, -1}, {-0.55, 0.1}, {-0.05, 0.1}, {-0.2, 1}, {0.55, -0.15}, {0.05, -0.15}, {0.3, -1}};
}

struct Frame {
  double cx, cy, radius, angle;  // pixels, radians
  cv::Point map(const cv::Point2d& u) const {
    double x = u.x * std::cos(angle) - u.y * std::sin(angle), y = u.x * std::sin(angle) + u.y * std::cos(angle);
    return {static_cast<int>(std::lround(cx + radius * x)), static_cast<int>(std::lround(cy + radius * y))};
  }
  std::vector<cv::Point> map(const Poly& poly) const {
    std::vector<cv::Point> out;
    for (const auto& u : poly) out.push_back(map(u));
    return out;
  }
};

void fill(cv::Mat& mask, const Frame& f, const Poly& poly) {
  std::vector<std::vector<cv::Point>> pts{f.map(poly)};
  cv::fillPoly(mask, pts, 255, cv::LINE_AA);
}

// Draws shape/glyph coverage (0-255) into `mask`.
void draw_mask(cv::Mat& mask, const Attributes& a, const Frame& f) {
  const int r = static_cast<int>(f.radius);
  const int thick = std::max(2, r / 4);
  if (a.glyph >= 0) {
    switch (a.glyph) {
      case 0: {  // spiral
        std::vector<cv::Point> pts;
        for (int i = 0; i <= 120; ++i) {
          double t = 3.2 * kPi * i / 120, rr = 0.12 + 0.85 * i / 120.0;
          pts.push_back(f.map(cv::Point2d(rr * std::cos(t), rr * std::sin(t))));
        }
        cv::polylines(mask, pts, false, 255, std::max(2, r / 6), cv::LINE_AA);
        break;
      }
      case 1: fill(mask, f, bolt_points()); break;
      case 2: {  // key: bow ring + shaft + two teeth
        cv::circle(mask, f.map(cv::Point2d(-0.55, 0)), static_cast<int>(0.4 * r), 255, std::max(2, r / 6), cv::LINE_AA);
        fill(mask, f, {{-0.18, -0.1}, {1.0, -0.1}, {1.0, 0.1}, {-0.18, 0.1}});
        fill(mask, f, {{0.55, 0.1}, {0.7, 0.1}, {0.7, 0.45}, {0.55, 0.45}});
        fill(mask, f, {{0.82, 0.1}, {0.97, 0.1}, {0.97, 0.35}, {0.82, 0.35}});
        break;
      }
      case 3: {  // moon: disc minus an offset disc
        cv::circle(mask, f.map(cv::Point2d(0, 0)), r, 255, cv::FILLED, cv::LINE_AA);
        cv::circle(mask, f.map(cv::Point2d(0.45, -0.2)), static_cast<int>(0.85 * r), 0, cv::FILLED, cv::LINE_AA);
        break;
      }
      default: {  // eye: almond outline + pupil
        cv::ellipse(mask, f.map(cv::Point2d(0, 0)), cv::Size(r, static_cast<int>(0.55 * r)), f.angle * 180 / kPi, 0,
                    360, 255, std::max(2, r / 7), cv::LINE_AA);
        cv::circle(mask, f.map(cv::Point2d(0, 0)), static_cast<int>(0.3 * r), 255, cv::FILLED, cv::LINE_AA);
        break;
      }
    }
    return;
  }
  switch (a.shape) {
    case 0: cv::circle(mask, f.map(cv::Point2d(0, 0)), r, 255, cv::FILLED, cv::LINE_AA); break;
    case 1: fill(mask, f, regular(4, 1.0, kPi / 4)); break;
    case 2: fill(mask, f, regular(3, 1.0, -kPi / 2)); break;
    case 3: fill(mask, f, star_points()); break;
    case 4: fill(mask, f, cross_points()); break;
    case 5: cv::circle(mask, f.map(cv::Point2d(0, 0)), r - thick / 2, 255, thick, cv::LINE_AA); break;
    case 6: fill(mask, f, regular(6, 1.0, 0)); break;
    default: fill(mask, f, heart_points()); break;
  }
}

cv::Mat background(const Attributes& a, int s, SampleRng& rng) {
  const bool night = style_names()[a.style] == "night";
  auto tone = [&] {
    if (night) return cv::Vec3b(rng.below(30), rng.below(30), 20 + rng.below(50));
    return cv::Vec3b(200 + rng.below(50), 200 + rng.below(50), 200 + rng.below(50));
  };
  cv::Vec3b c0 = tone(), c1 = tone();
  cv::Mat bg(s, s, CV_8UC3, cv::Scalar(c0[0], c0[1], c0[2]));
  if (a.background == 1) {  // two-tone split along a random line through the image
    double ang = rng.uniform(0, kPi), off = rng.uniform(-0.2, 0.2) * s;
    for (int y = 0; y < s; ++y)
      for (int x = 0; x < s; ++x)
        if ((x - s / 2.0) * std::cos(ang) + (y - s / 2.0) * std::sin(ang) > off) bg.at<cv::Vec3b>(y, x) = c1;
  } else if (a.background == 2) {  // vertical gradient
    for (int y = 0; y < s; ++y) {
      double t = static_cast<double>(y) / (s - 1);
      cv::Vec3b c;
      for (int k = 0; k < 3; ++k) c[k] = static_cast<std::uint8_t>(c0[k] * (1 - t) + c1[k] * t);
      bg.row(y).setTo(cv::Scalar(c[0], c[1], c[2]));
    }
  }
  return bg;
}

}  // namespace

const std::vector<std::string>& shape_names() {
  static const std::vector<std::string> v = {"circle", "square", "triangle", "star",
                                             "cross",  "ring",   "hexagon",  "heart"};
  return v;
}
const std::vector<std::string>& glyph_names() {
  static const std::vector<std::string> v = {"spiral", "bolt", "key", "moon", "eye"};
  return v;
}
const std::vector<std::string>& style_names() {
  static const std::vector<std::string> v = {"flat", "outline", "striped", "night", "pixel"};
  return v;
}
const std::vector<std::string>& color_names() {
  static const std::vector<std::string> v = {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"};
  return v;
}
const std::vector<std::string>& split_names() {
  static const std::vector<std::string> v = {"train", "val", "test"};
  return v;
}

int index_of(const std::vector<std::string>& names, const std::string& name, const std::string& what) {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<int>(i);
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  fail(what, ": '", name, "' is not one of: ", list);
}

std::string Attributes::caption() const {
  static const char* kBackgrounds[] = {"plain", "two-tone", "gradient"};
  std::string size = scale < 0.55f ? "small" : scale > 0.7f ? "large" : "medium";
  std::string what = glyph >= 0 ? glyph_names()[glyph] + " glyph" : shape_names()[shape];
  return "a " + size + " " + color_names()[color] + " " + what + " on a " + kBackgrounds[background] + " background, " +
         style_names()[style] + " style";
}

int Spec::num_labels() const {
  if (!glyphs.empty()) return static_cast<int>(glyphs.size());
  return shapes.empty() ? static_cast<int>(shape_names().size()) : static_cast<int>(shapes.size());
}

std::string Spec::label_name(int label) const {
  if (!glyphs.empty()) return glyph_names().at(glyphs.at(label));
  return shape_names().at(shapes.empty() ? label : shapes.at(label));
}

Attributes sample_attributes(const Spec& spec, int split, std::int64_t index, int* label) {
  SampleRng rng(spec.seed, split, index);
  Attributes a;
  int l = rng.below(spec.num_labels());
  if (!spec.glyphs.empty()) {
    a.glyph = spec.glyphs[l];
    a.shape = -1;
  } else {
    a.shape = spec.shapes.empty() ? l : spec.shapes[l];
  }
  a.color = rng.below(static_cast<int>(color_names().size()));
  a.style = spec.styles.empty() ? 0 : spec.styles[rng.below(static_cast<int>(spec.styles.size()))];
  a.background = spec.plain_backgrounds ? 0 : rng.below(3);
  a.scale = static_cast<float>(rng.uniform(spec.min_scale, spec.max_scale));
  a.cx = 0.5f + static_cast<float>(rng.uniform(-spec.jitter, spec.jitter));
  a.cy = 0.5f + static_cast<float>(rng.uniform(-spec.jitter, spec.jitter));
  a.angle = spec.rotation >= 360.0f ? static_cast<float>(rng.uniform(0, 360))
                                    : static_cast<float>(rng.uniform(-spec.rotation / 2, spec.rotation / 2));
  if (label != nullptr) *label = l;
  return a;
}

Image render(const Attributes& a, int size) {
  if (size < 8 || size > 4096) fail("Shapes image size ", size, " is outside [8, 4096]");
  const int s = size * kSupersample;
  SampleRng rng(static_cast<std::uint64_t>(a.color * 131 + a.style * 17 + a.background), a.shape + 7 * a.glyph + 100,
                static_cast<std::int64_t>(a.angle * 1000 + a.cx * 1e6 + a.cy * 1e4));
  cv::Mat canvas = background(a, s, rng);
  cv::Mat mask = cv::Mat::zeros(s, s, CV_8UC1);
  Frame f{a.cx * s, a.cy * s, a.scale * s / 2.0, a.angle * kPi / 180.0};
  draw_mask(mask, a, f);

  const std::string& style = style_names()[a.style];
  cv::Vec3b color = palette()[a.color];
  if (style == "outline") {
    cv::Mat inner;
    int k = std::max(3, s / 20) | 1;
    cv::erode(mask, inner, cv::getStructuringElement(cv::MORPH_ELLIPSE, {k, k}));
    mask = mask - inner;
  }
  cv::Mat fill_color(s, s, CV_8UC3, cv::Scalar(color[0], color[1], color[2]));
  if (style == "striped") {
    int period = std::max(4, s / 8);
    for (int y = 0; y < s; ++y)
      for (int x = 0; x < s; ++x)
        if (((x + y) / (period / 2)) % 2 == 1) fill_color.at<cv::Vec3b>(y, x) = cv::Vec3b(250, 250, 250);
  } else if (style == "night") {
    cv::Mat glow;
    cv::GaussianBlur(mask, glow, {0, 0}, s / 24.0);
    cv::max(mask, glow, mask);
    fill_color = cv::Scalar(std::min(255, color[0] + 40), std::min(255, color[1] + 40), std::min(255, color[2] + 40));
  }
  for (int y = 0; y < s; ++y) {
    auto* c = canvas.ptr<cv::Vec3b>(y);
    const auto* m = mask.ptr<std::uint8_t>(y);
    const auto* fc = fill_color.ptr<cv::Vec3b>(y);
    for (int x = 0; x < s; ++x)
      for (int k = 0; k < 3; ++k) c[x][k] = static_cast<std::uint8_t>((c[x][k] * (255 - m[x]) + fc[x][k] * m[x]) / 255);
  }
  cv::Mat out;
  cv::resize(canvas, out, {size, size}, 0, 0, cv::INTER_AREA);
  if (style == "pixel") {
    cv::Mat small;
    int cells = std::max(2, size / 4);
    cv::resize(out, small, {cells, cells}, 0, 0, cv::INTER_AREA);
    cv::resize(small, out, {size, size}, 0, 0, cv::INTER_NEAREST);
  }
  Image img{size, size, 3, {}};
  img.pixels.assign(out.data, out.data + out.total() * out.elemSize());
  return img;
}

Batch make_batch(const Spec& spec, int split, std::int64_t first_index, std::int64_t count, int restyle) {
  if (split < 0 || split > 2) fail("Shapes split ", split, " is not train/val/test");
  if (restyle >= static_cast<int>(style_names().size())) fail("Shapes style ", restyle, " does not exist");
  Batch b;
  b.images = torch::empty({count, 3, spec.size, spec.size});
  b.labels = torch::empty({count}, torch::kLong);
  b.styles = torch::empty({count}, torch::kLong);
  auto labels = b.labels.accessor<std::int64_t, 1>();
  auto styles = b.styles.accessor<std::int64_t, 1>();
  float* out = b.images.data_ptr<float>();
  const std::int64_t plane = static_cast<std::int64_t>(spec.size) * spec.size;
  at::parallel_for(0, count, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      int label = 0;
      Attributes a = sample_attributes(spec, split, first_index + i, &label);
      if (restyle >= 0) a.style = restyle;
      Image img = render(a, spec.size);
      for (std::int64_t p = 0; p < plane; ++p)
        for (int ch = 0; ch < 3; ++ch) out[(i * 3 + ch) * plane + p] = img.pixels[p * 3 + ch] / 127.5f - 1.0f;
      labels[i] = label;
      styles[i] = a.style;
    }
  });
  return b;
}

}  // namespace atelier::shapes
