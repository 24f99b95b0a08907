#include "data/corruptions.h"

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <random>

#include "core/error.h"
#include "core/image_decode.h"

namespace atelier {
namespace {

constexpr double kPi = 3.14159265358979323846;

// All draws of one corruption. mt19937_64's output is fixed by the standard; the uniform, normal and
// Poisson transforms are ours, so the bits do not depend on the C++ library.
class Draws {
 public:
  explicit Draws(std::uint64_t seed) : engine_(seed) {}
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int integer(int lo, int hi) { return lo + static_cast<int>(engine_() % static_cast<std::uint64_t>(hi - lo)); }
  double normal() {  // Box-Muller
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(1.0 - uniform())), theta = 2 * kPi * uniform();
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return r * std::cos(theta);
  }
  // Knuth's product of uniforms below 10, Hoermann's transformed rejection (PTRS, 1993) above.
  int poisson(double mean) {
    if (mean <= 0) return 0;
    if (mean < 10) {
      const double limit = std::exp(-mean);
      int k = 0;
      for (double p = uniform(); p > limit; p *= uniform()) ++k;
      return k;
    }
    const double log_mean = std::log(mean), b = 0.931 + 2.53 * std::sqrt(mean), a = -0.059 + 0.02483 * b;
    const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4), v_r = 0.9277 - 3.6224 / (b - 2);
    for (;;) {
      const double u = uniform() - 0.5, v = uniform(), us = 0.5 - std::abs(u);
      const double k = std::floor((2 * a / us + b) * u + mean + 0.43);
      if (us >= 0.07 && v <= v_r) return static_cast<int>(k);
      if (k < 0 || (us < 0.013 && v > us)) continue;
      if (std::log(v) + std::log(inv_alpha) - std::log(a / (us * us) + b) <= -mean + k * log_mean - std::lgamma(k + 1))
        return static_cast<int>(k);
    }
  }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0;
};

using cv::Mat;  // corruptions work on CV_32FC3 RGB in [0, 1]

Mat to_float(const Image& image) {
  Mat u8(image.height, image.width, CV_8UC3, const_cast<std::uint8_t*>(image.pixels.data()));
  Mat x;
  u8.convertTo(x, CV_32FC3, 1.0 / 255);
  return x;
}

Image to_image(const Mat& x) {
  Mat u8;
  x.convertTo(u8, CV_8UC3, 255.0);  // saturates to [0, 255], rounds
  Image out{x.cols, x.rows, 3, {}};
  out.pixels.assign(u8.ptr<std::uint8_t>(), u8.ptr<std::uint8_t>() + u8.total() * 3);
  return out;
}

template <class F>
void for_each_value(Mat& x, F f) {
  auto* p = x.ptr<float>();
  for (std::size_t i = 0, n = x.total() * x.channels(); i < n; ++i) p[i] = f(p[i]);
}

Mat gray3(const Mat& x) {  // luma, in every channel
  Mat g, out;
  cv::cvtColor(x, g, cv::COLOR_RGB2GRAY);
  cv::cvtColor(g, out, cv::COLOR_GRAY2RGB);
  return out;
}

// Gaussian blur with a kernel truncated at `truncate` sigmas (scikit-image's convention).
Mat gaussian(const Mat& x, double sigma, double truncate, int border) {
  const int r = static_cast<int>(truncate * sigma + 0.5);
  if (r < 1) return x.clone();
  const Mat k = cv::getGaussianKernel(2 * r + 1, sigma, CV_32F);
  Mat out;
  cv::sepFilter2D(x, out, -1, k, k, cv::Point(-1, -1), 0, border);
  return out;
}

// The central 1/z of `x` scaled up z times (bilinear), same size.
Mat zoom_centre(const Mat& x, double z) {
  const double cx = (x.cols - 1) / 2.0, cy = (x.rows - 1) / 2.0;
  const Mat m = (cv::Mat_<double>(2, 3) << z, 0, (1 - z) * cx, 0, z, (1 - z) * cy);
  Mat out;
  cv::warpAffine(x, out, m, x.size(), cv::INTER_LINEAR, cv::BORDER_REPLICATE);
  return out;
}

// ImageMagick's motion blur kernel as a correlation kernel: 2 * radius + 1 taps on a one-sided line at
// `angle` degrees, tap i at distance i weighted exp(-i^2 / 2 sigma^2), normalised.
Mat motion_kernel(double radius, double sigma, double angle) {
  const int taps = 2 * static_cast<int>(radius) + 1, half = taps - 1;
  const double c = std::cos(angle * kPi / 180), s = std::sin(angle * kPi / 180);
  Mat k = Mat::zeros(2 * half + 1, 2 * half + 1, CV_32F);
  double total = 0;
  for (int i = 0; i < taps; ++i) {
    const double w = std::exp(-i * i / (2 * sigma * sigma));
    k.at<float>(half + static_cast<int>(std::lround(i * s)), half + static_cast<int>(std::lround(i * c))) +=
        static_cast<float>(w);
    total += w;
  }
  return k / total;
}

// Diamond-square plasma fractal on a wrapping power-of-two grid covering rows x cols, in [0, 1]
// (CV_32F, rows x cols). Octave k is perturbed by uniform(-1, 1) * (100 / decay^k)^2: the reference
// scales uniform(-w, w) by w once more, so its amplitude falls by decay^2 per octave.
Mat plasma(int rows, int cols, double decay, Draws& draws) {
  int n = 2;
  while (n < std::max(rows, cols)) n *= 2;
  std::vector<double> m(static_cast<std::size_t>(n) * n, 0.0);
  auto at = [&](int y, int x) -> double& { return m[static_cast<std::size_t>((y + n) % n) * n + (x + n) % n]; };
  double wibble = 100;
  for (int step = n; step >= 2; step /= 2, wibble /= decay) {
    const int h = step / 2;
    const double amp = wibble * wibble;
    for (int y = 0; y < n; y += step)  // squares: a cell's centre from its 4 corners
      for (int x = 0; x < n; x += step)
        at(y + h, x + h) =
            (at(y, x) + at(y + step, x) + at(y, x + step) + at(y + step, x + step)) / 4 + amp * draws.uniform(-1, 1);
    for (int y = 0; y < n; y += step)  // diamonds: an edge midpoint from its 2 corners and 2 centres
      for (int x = 0; x < n; x += step) {
        at(y, x + h) =
            (at(y, x) + at(y, x + step) + at(y - h, x + h) + at(y + h, x + h)) / 4 + amp * draws.uniform(-1, 1);
        at(y + h, x) =
            (at(y, x) + at(y + step, x) + at(y + h, x - h) + at(y + h, x + h)) / 4 + amp * draws.uniform(-1, 1);
      }
  }
  const auto [lo, hi] = std::minmax_element(m.begin(), m.end());
  const double min = *lo, range = std::max(*hi - *lo, 1e-12);
  Mat out(rows, cols, CV_32F);
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) out.at<float>(y, x) = static_cast<float>((at(y, x) - min) / range);
  return out;
}

// --- the corruptions (s = severity - 1) ---------------------------------------------------------------

Mat gaussian_noise(const Mat& image, int s, Draws& draws) {
  static constexpr double kSigma[] = {.04, .06, .08, .09, .10};
  Mat x = image.clone();
  for_each_value(x, [&](float v) { return static_cast<float>(v + kSigma[s] * draws.normal()); });
  return x;
}

Mat shot_noise(const Mat& image, int s, Draws& draws) {
  static constexpr double kRate[] = {500, 250, 100, 75, 50};  // photons at full intensity
  Mat x = image.clone();
  for_each_value(x, [&](float v) { return static_cast<float>(draws.poisson(v * kRate[s]) / kRate[s]); });
  return x;
}

Mat impulse_noise(const Mat& image, int s, Draws& draws) {
  static constexpr double kAmount[] = {.01, .02, .03, .05, .07};  // fraction of values set to 0 or 1
  Mat x = image.clone();
  for_each_value(x, [&](float v) {
    if (draws.uniform() >= kAmount[s]) return v;
    return draws.uniform() < 0.5 ? 1.0f : 0.0f;
  });
  return x;
}

Mat defocus_blur(const Mat& image, int s, Draws&) {
  static constexpr double kRadius[] = {.3, .4, .5, 1, 1.5}, kAliasBlur[] = {.4, .5, .6, .2, .1};
  const double r = kRadius[s];
  const int half = r <= 8 ? 8 : static_cast<int>(r), alias_size = r <= 8 ? 3 : 5;
  Mat disk(2 * half + 1, 2 * half + 1, CV_32F);
  for (int y = -half; y <= half; ++y)
    for (int x = -half; x <= half; ++x) disk.at<float>(y + half, x + half) = x * x + y * y <= r * r ? 1.0f : 0.0f;
  disk /= cv::sum(disk)[0];
  cv::GaussianBlur(disk, disk, cv::Size(alias_size, alias_size), kAliasBlur[s]);  // anti-aliased disk
  Mat out;
  cv::filter2D(image, out, -1, disk, cv::Point(-1, -1), 0, cv::BORDER_REFLECT_101);
  return out;
}

Mat glass_blur(const Mat& image, int s, Draws& draws) {
  static constexpr double kSigma[] = {.05, .25, .4, .25, .4};
  static constexpr int kMaxDelta[] = {1, 1, 1, 1, 1}, kIterations[] = {1, 1, 1, 2, 2};
  Mat x = gaussian(image, kSigma[s], 4, cv::BORDER_REPLICATE);
  // Local shuffling: each pixel, bottom-right to top-left, swaps with one at offsets in [-d, d) (the
  // reference's range: numpy's randint excludes its upper bound), so content drifts up and left.
  const int d = kMaxDelta[s];
  for (int it = 0; it < kIterations[s]; ++it)
    for (int y = x.rows - d; y > d; --y)
      for (int xx = x.cols - d; xx > d; --xx) {
        const int dx = draws.integer(-d, d), dy = draws.integer(-d, d);
        std::swap(x.at<cv::Vec3f>(y, xx), x.at<cv::Vec3f>(y + dy, xx + dx));
      }
  return gaussian(x, kSigma[s], 4, cv::BORDER_REPLICATE);
}

Mat motion_blur(const Mat& image, int s, Draws& draws) {
  static constexpr double kRadius[] = {6, 6, 6, 8, 9}, kSigma[] = {1, 1.5, 2, 2, 2.5};
  const double angle = draws.uniform(-45, 45);
  Mat out;
  cv::filter2D(image, out, -1, motion_kernel(kRadius[s], kSigma[s], angle), cv::Point(-1, -1), 0, cv::BORDER_REPLICATE);
  return out;
}

Mat zoom_blur(const Mat& image, int s, Draws&) {
  // zooms 1, 1.01, ... below `end` (the reference's arange(1, end, 0.01)); the image counts twice.
  static constexpr double kEnd[] = {1.06, 1.11, 1.16, 1.21, 1.26};
  const int zooms = static_cast<int>(std::lround((kEnd[s] - 1) / 0.01));
  Mat sum = image.clone();
  for (int k = 0; k < zooms; ++k) sum += zoom_centre(image, 1 + 0.01 * k);
  return sum / (zooms + 1);
}

Mat snow(const Mat& image, int s, Draws& draws) {
  struct P {
    double mean, std, zoom, threshold, blur_radius, blur_sigma, blend;
  };
  static constexpr P kP[] = {{.1, .2, 1, .6, 8, 3, .95},
                             {.1, .2, 1, .5, 10, 4, .9},
                             {.15, .3, 1.75, .55, 10, 4, .9},
                             {.25, .3, 2.25, .6, 12, 6, .85},
                             {.3, .3, 1.25, .65, 14, 12, .8}};
  const P& p = kP[s];
  Mat layer(image.rows, image.cols, CV_32F);
  for_each_value(layer, [&](float) { return static_cast<float>(p.mean + p.std * draws.normal()); });
  layer = zoom_centre(layer, p.zoom);
  cv::threshold(layer, layer, p.threshold, 0, cv::THRESH_TOZERO);  // flakes: the values above threshold
  layer = cv::min(layer, 1.0);
  cv::filter2D(layer, layer, -1, motion_kernel(p.blur_radius, p.blur_sigma, draws.uniform(-135, -45)),
               cv::Point(-1, -1), 0, cv::BORDER_REPLICATE);
  Mat flipped, flakes;
  cv::flip(layer, flipped, -1);  // the layer once more, rotated 180 degrees
  cv::cvtColor(layer + flipped, flakes, cv::COLOR_GRAY2RGB);
  const Mat bright = gray3(image) * 1.5 + cv::Scalar::all(0.5), whitened = cv::max(image, bright);
  return p.blend * image + (1 - p.blend) * whitened + flakes;
}

Mat frost(const Mat& image, int s, Draws& draws) {
  static constexpr double kImage[] = {1, 1, .9, .85, .75}, kFrost[] = {.2, .3, .4, .4, .45};
  const Mat haze = plasma(image.rows, image.cols, 2.0, draws), rough = plasma(image.rows, image.cols, 1.3, draws);
  Mat ice(image.rows, image.cols, CV_32F);
  for (int y = 0; y < ice.rows; ++y)
    for (int x = 0; x < ice.cols; ++x) {
      const double ridge = std::pow(1 - std::abs(2 * rough.at<float>(y, x) - 1), 4);  // thin bright veins
      ice.at<float>(y, x) = static_cast<float>(std::min(1.0, 0.15 + 0.45 * haze.at<float>(y, x) + 0.6 * ridge));
    }
  Mat texture;
  cv::cvtColor(ice, texture, cv::COLOR_GRAY2RGB);
  cv::multiply(texture, cv::Scalar(0.85, 0.93, 1.0), texture);  // pale blue
  return kImage[s] * image + kFrost[s] * texture;
}

Mat fog(const Mat& image, int s, Draws& draws) {
  static constexpr double kStrength[] = {.2, .5, .75, 1, 1.5}, kDecay[] = {3, 3, 2.5, 2, 1.75};
  double max = 0;
  cv::minMaxLoc(image.reshape(1), nullptr, &max);
  Mat haze;
  cv::cvtColor(plasma(image.rows, image.cols, kDecay[s], draws), haze, cv::COLOR_GRAY2RGB);
  return (image + kStrength[s] * haze) * (max / (max + kStrength[s]));
}

Mat brightness(const Mat& image, int s, Draws&) {
  static constexpr double kShift[] = {.05, .1, .15, .2, .3};  // added to V in HSV
  Mat hsv, out;
  cv::cvtColor(image, hsv, cv::COLOR_RGB2HSV);  // float: H in degrees, S and V in [0, 1]
  for (int y = 0; y < hsv.rows; ++y)
    for (int x = 0; x < hsv.cols; ++x) {
      float& v = hsv.at<cv::Vec3f>(y, x)[2];
      v = std::min(1.0f, static_cast<float>(v + kShift[s]));
    }
  cv::cvtColor(hsv, out, cv::COLOR_HSV2RGB);
  return out;
}

Mat contrast(const Mat& image, int s, Draws&) {
  static constexpr double kScale[] = {.75, .5, .4, .3, .15};
  const cv::Scalar mean = cv::mean(image);  // per channel
  return (image - mean) * kScale[s] + mean;
}

Mat elastic_transform(const Mat& image, int s, Draws& draws) {
  // (alpha, sigma, affine) as fractions of the image size
  static constexpr double kP[][3] = {{0, 0, .08}, {.05, .2, .07}, {.08, .06, .06}, {.1, .04, .05}, {.1, .03, .03}};
  const double size = std::min(image.rows, image.cols), alpha = kP[s][0] * size, sigma = kP[s][1] * size,
               affine = kP[s][2] * size;
  // A random affine map: three points around the centre, each coordinate moved by up to `affine` pixels.
  const float cx = static_cast<float>(image.cols / 2), cy = static_cast<float>(image.rows / 2),
              q = static_cast<float>(std::min(image.rows, image.cols) / 3);
  const cv::Point2f from[3] = {{cx + q, cy + q}, {cx + q, cy - q}, {cx - q, cy - q}};
  cv::Point2f to[3];
  for (int i = 0; i < 3; ++i) {
    const double dx = draws.uniform(-affine, affine), dy = draws.uniform(-affine, affine);
    to[i] = from[i] + cv::Point2f(static_cast<float>(dx), static_cast<float>(dy));
  }
  Mat warped;
  cv::warpAffine(image, warped, cv::getAffineTransform(from, to), image.size(), cv::INTER_LINEAR,
                 cv::BORDER_REFLECT_101);
  if (alpha == 0) return warped;
  // Then a smooth random displacement field: uniform(-1, 1) noise, Gaussian-smoothed, times alpha.
  Mat dx(image.rows, image.cols, CV_32F), dy(image.rows, image.cols, CV_32F);
  for_each_value(dx, [&](float) { return static_cast<float>(draws.uniform(-1, 1)); });
  for_each_value(dy, [&](float) { return static_cast<float>(draws.uniform(-1, 1)); });
  dx = gaussian(dx, sigma, 3, cv::BORDER_REFLECT) * alpha;
  dy = gaussian(dy, sigma, 3, cv::BORDER_REFLECT) * alpha;
  for (int y = 0; y < image.rows; ++y)
    for (int x = 0; x < image.cols; ++x) {
      dx.at<float>(y, x) += static_cast<float>(x);
      dy.at<float>(y, x) += static_cast<float>(y);
    }
  Mat out;
  cv::remap(warped, out, dx, dy, cv::INTER_LINEAR, cv::BORDER_REFLECT);
  return out;
}

Mat pixelate(const Mat& image, int s, Draws&) {
  static constexpr double kScale[] = {.95, .9, .85, .75, .65};
  const cv::Size small(std::max(1, static_cast<int>(image.cols * kScale[s])),
                       std::max(1, static_cast<int>(image.rows * kScale[s])));
  Mat down, out;
  cv::resize(image, down, small, 0, 0, cv::INTER_AREA);
  cv::resize(down, out, image.size(), 0, 0, cv::INTER_NEAREST_EXACT);  // centre-aligned, as PIL's
  return out;
}

Mat jpeg_compression(const Mat& image, int s, Draws&) {
  static constexpr int kQuality[] = {80, 65, 58, 50, 40};
  const Image pixels = to_image(image);
  std::string jpeg;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size);
  };
  if (!stbi_write_jpg_to_func(sink, &jpeg, pixels.width, pixels.height, 3, pixels.pixels.data(), kQuality[s]))
    fail("jpeg_compression: JPEG encoding failed");
  return to_float(decode_image(jpeg, "jpeg_compression", 3));
}

using Apply = Mat (*)(const Mat&, int, Draws&);
struct Entry {
  std::string name;
  Apply apply;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      {"gaussian_noise", gaussian_noise},
      {"shot_noise", shot_noise},
      {"impulse_noise", impulse_noise},
      {"defocus_blur", defocus_blur},
      {"glass_blur", glass_blur},
      {"motion_blur", motion_blur},
      {"zoom_blur", zoom_blur},
      {"snow", snow},
      {"frost", frost},
      {"fog", fog},
      {"brightness", brightness},
      {"contrast", contrast},
      {"elastic_transform", elastic_transform},
      {"pixelate", pixelate},
      {"jpeg_compression", jpeg_compression},
  };
  return table;
}

const Entry& entry(const std::string& name) {
  const auto& table = entries();
  const auto it = std::find_if(table.begin(), table.end(), [&](const Entry& e) { return e.name == name; });
  if (it != table.end()) return *it;
  std::string known;
  for (const auto& e : table) known += (known.empty() ? "" : ", ") + e.name;
  fail("unknown corruption '", name, "'; known: ", known);
}

}  // namespace

const std::vector<std::string>& corruption_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& e : entries()) out.push_back(e.name);
    return out;
  }();
  return names;
}

void check_corruption(const std::string& name, int severity) {
  (void)entry(name);
  if (severity < 1 || severity > 5) fail("severity ", severity, " is outside 1..5");
}

Image corrupt(const Image& image, const std::string& name, int severity, std::uint64_t seed) {
  check_corruption(name, severity);
  if (image.channels != 3 || image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<std::size_t>(image.width) * image.height * 3)
    fail(name, ": expects an RGB image, got ", image.width, "x", image.height, "x", image.channels);
  Draws draws(seed);
  return to_image(entry(name).apply(to_float(image), severity - 1, draws));
}

std::uint64_t corruption_seed(std::uint64_t seed, std::int64_t index) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(index) * 0xD1B54A32D192ED03ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;  // splitmix64's finaliser
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace atelier
