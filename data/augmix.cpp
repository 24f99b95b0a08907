#include "data/augmix.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <random>

#include "core/error.h"

namespace atelier {
namespace {

using cv::Mat;

// The reference's parameter scales: a level in (0, 10] maps linearly onto [0, max].
int int_parameter(double level, double max) {
  return static_cast<int>(level * max / 10.0);
}
double float_parameter(double level, double max) {
  return level * max / 10.0;
}

Mat as_mat(const Image& image) {
  return Mat(image.height, image.width, CV_8UC3, const_cast<std::uint8_t*>(image.pixels.data())).clone();
}

Image as_image(const Mat& m) {
  Image out{m.cols, m.rows, 3, {}};
  out.pixels.assign(m.ptr<std::uint8_t>(), m.ptr<std::uint8_t>() + m.total() * 3);
  return out;
}

// Each channel stretched so that its darkest value becomes 0 and its brightest 255.
Mat autocontrast(const Mat& x) {
  std::vector<Mat> channels;
  cv::split(x, channels);
  for (auto& c : channels) {
    double lo = 0, hi = 0;
    cv::minMaxLoc(c, &lo, &hi);
    if (hi > lo) c.convertTo(c, CV_8U, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));
  }
  Mat out;
  cv::merge(channels, out);
  return out;
}

Mat equalize(const Mat& x) {
  std::vector<Mat> channels;
  cv::split(x, channels);
  for (auto& c : channels) cv::equalizeHist(c, c);
  Mat out;
  cv::merge(channels, out);
  return out;
}

// Output pixel (u, v) takes input pixel m * (u, v, 1); outside the image: black.
Mat affine(const Mat& x, double a, double b, double c, double d, double e, double f) {
  const Mat m = (cv::Mat_<double>(2, 3) << a, b, c, d, e, f);
  Mat out;
  cv::warpAffine(x, out, m, x.size(), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT, cv::Scalar::all(0));
  return out;
}

Mat apply(const Mat& x, const std::string& name, double level, int sign) {
  if (name == "autocontrast") return autocontrast(x);
  if (name == "equalize") return equalize(x);
  if (name == "posterize") {  // keep the top 4 .. 4 - level*4/10 bits
    const int bits = 4 - int_parameter(level, 4);
    Mat out;
    cv::bitwise_and(x, cv::Scalar::all(static_cast<double>(0xff & ~((1 << (8 - bits)) - 1))), out);
    return out;
  }
  if (name == "solarize") {  // invert the values at or above the threshold
    const int threshold = 256 - int_parameter(level, 256);
    Mat out = x.clone();  // continuous: every channel value in a row
    std::uint8_t* v = out.ptr<std::uint8_t>();
    for (std::size_t i = 0; i < out.total() * 3; ++i)
      if (v[i] >= threshold) v[i] = static_cast<std::uint8_t>(255 - v[i]);
    return out;
  }
  if (name == "rotate") {  // counter-clockwise by up to 3 degrees per level, about the centre
    const double degrees = int_parameter(level, 30) * sign;
    const cv::Point2f centre(static_cast<float>(x.cols) / 2.0f, static_cast<float>(x.rows) / 2.0f);
    Mat m = cv::getRotationMatrix2D(centre, degrees, 1.0), out;
    cv::warpAffine(x, out, m, x.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar::all(0));
    return out;
  }
  if (name == "shear_x") return affine(x, 1, float_parameter(level, 0.3) * sign, 0, 0, 1, 0);
  if (name == "shear_y") return affine(x, 1, 0, 0, float_parameter(level, 0.3) * sign, 1, 0);
  if (name == "translate_x") return affine(x, 1, 0, int_parameter(level, x.cols / 3.0) * sign, 0, 1, 0);
  if (name == "translate_y") return affine(x, 1, 0, 0, 0, 1, int_parameter(level, x.rows / 3.0) * sign);
  fail("unknown AugMix operation '", name, "'");
}

class Draws {
 public:
  explicit Draws(std::uint64_t seed) : engine_(seed) {}
  double uniform() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  int below(int n) { return std::min(n - 1, static_cast<int>(uniform() * n)); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace

const std::vector<std::string>& augmix_operations() {
  static const std::vector<std::string> names = {"autocontrast", "equalize", "posterize",   "solarize",   "rotate",
                                                 "shear_x",      "shear_y",  "translate_x", "translate_y"};
  return names;
}

Image augmix_operation(const Image& image, const std::string& name, double level, int sign) {
  if (image.channels != 3) fail("AugMix: an RGB image is needed, this one has ", image.channels, " channel(s)");
  return as_image(apply(as_mat(image), name, level, sign));
}

Image augmix(const Image& image, const AugMixSettings& s, std::uint64_t seed) {
  if (image.channels != 3) fail("AugMix: an RGB image is needed, this one has ", image.channels, " channel(s)");
  if (s.severity < 1 || s.severity > 10) fail("AugMix: severity ", s.severity, " is not in [1, 10]");
  if (s.width < 1) fail("AugMix: width ", s.width, " is not at least 1");
  Draws draw(seed);
  const Mat x = as_mat(image);
  // Dirichlet(1, ..., 1) weights: normalised exponential draws.
  std::vector<double> w(static_cast<std::size_t>(s.width));
  double total = 0;
  for (auto& v : w) total += v = -std::log(1.0 - draw.uniform());
  Mat mix = Mat::zeros(x.size(), CV_32FC3);
  const auto& ops = augmix_operations();
  for (int chain = 0; chain < s.width; ++chain) {
    Mat y = x;
    const int depth = 1 + draw.below(3);
    for (int k = 0; k < depth; ++k) {
      const auto& name = ops[static_cast<std::size_t>(draw.below(static_cast<int>(ops.size())))];
      const double level = 0.1 + (s.severity - 0.1) * draw.uniform();
      const int sign = draw.uniform() < 0.5 ? -1 : 1;
      y = apply(y, name, level, sign);
    }
    Mat yf;
    y.convertTo(yf, CV_32FC3);
    mix += yf * (w[static_cast<std::size_t>(chain)] / total);
  }
  const double m = draw.uniform();  // Beta(1, 1)
  Mat xf, out;
  x.convertTo(xf, CV_32FC3);
  Mat blended = xf * m + mix * (1.0 - m);
  blended.convertTo(out, CV_8UC3);  // rounds and saturates
  return as_image(out);
}

}  // namespace atelier
