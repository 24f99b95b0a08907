#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "core/image.h"
#include "data/augmix.h"
#include "data/corruptions.h"
#include "data/presets.h"
#include "studio/workspace.h"
#include "tests/helpers.h"

using namespace atelier;
namespace fs = std::filesystem;

namespace {

// 16 Shapes images, 32x32, in several styles on plain and busy backgrounds.
const std::vector<Image>& clean_images() {
  static const std::vector<Image> images =
      render_shapes(json{{"styles", {"flat", "striped", "night", "outline"}}, {"plain_backgrounds", false}}, 32, 16);
  return images;
}

double mean_abs_diff(const Image& a, const Image& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) sum += std::abs(a.pixels[i] - b.pixels[i]);
  return sum / static_cast<double>(a.pixels.size());
}

// Mean squared difference of horizontally and vertically adjacent values: high-frequency energy.
double high_frequency(const Image& a) {
  double sum = 0;
  auto at = [&](int y, int x, int c) { return static_cast<double>(a.pixels[(y * a.width + x) * 3 + c]); };
  for (int y = 0; y + 1 < a.height; ++y)
    for (int x = 0; x + 1 < a.width; ++x)
      for (int c = 0; c < 3; ++c)
        sum += std::pow(at(y, x + 1, c) - at(y, x, c), 2) + std::pow(at(y + 1, x, c) - at(y, x, c), 2);
  return sum / ((a.height - 1) * (a.width - 1) * 3);
}

double mean_v(const Image& a) {  // HSV value: max(R, G, B)
  double sum = 0;
  for (std::size_t i = 0; i < a.pixels.size(); i += 3) sum += std::max({a.pixels[i], a.pixels[i + 1], a.pixels[i + 2]});
  return sum / (a.pixels.size() / 3);
}

double channel_std(const Image& a) {  // per-channel standard deviation, averaged over channels
  double total = 0;
  const std::size_t n = a.pixels.size() / 3;
  for (int c = 0; c < 3; ++c) {
    double s = 0, s2 = 0;
    for (std::size_t i = 0; i < n; ++i) {
      s += a.pixels[i * 3 + c];
      s2 += std::pow(a.pixels[i * 3 + c], 2);
    }
    total += std::sqrt(std::max(0.0, s2 / n - std::pow(s / n, 2)));
  }
  return total / 3;
}

// Fraction of horizontally or vertically adjacent pixels that are equal in all channels.
double equal_neighbours(const Image& a) {
  int equal = 0, pairs = 0;
  auto same = [&](int i, int j) { return std::equal(&a.pixels[i * 3], &a.pixels[i * 3] + 3, &a.pixels[j * 3]); };
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x) {
      if (x + 1 < a.width) equal += same(y * a.width + x, y * a.width + x + 1), ++pairs;
      if (y + 1 < a.height) equal += same(y * a.width + x, (y + 1) * a.width + x), ++pairs;
    }
  return static_cast<double>(equal) / pairs;
}

double correlation(const Image& a, const Image& b) {
  double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  const double n = static_cast<double>(a.pixels.size());
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    const double x = a.pixels[i], y = b.pixels[i];
    sa += x, sb += y, saa += x * x, sbb += y * y, sab += x * y;
  }
  const double cov = sab / n - sa * sb / n / n, va = saa / n - sa * sa / n / n, vb = sbb / n - sb * sb / n / n;
  return cov / std::sqrt(std::max(va * vb, 1e-12));
}

// The non-affine part of elastic_transform's displacement, in pixels: the image encodes each pixel's
// coordinates (R = 8x + 4, G = 8y + 4; bilinear resampling keeps them linear), so the corrupted image
// says where each output pixel was sampled from; the RMS residual of the best affine fit over the
// interior (8..23, clear of the reflected borders) is what the elastic field adds to the random affine.
double non_affine_displacement(int severity, std::uint64_t seed) {
  Image ramp{32, 32, 3, std::vector<std::uint8_t>(32 * 32 * 3, 128)};
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      ramp.pixels[(y * 32 + x) * 3 + 0] = static_cast<std::uint8_t>(8 * x + 4);
      ramp.pixels[(y * 32 + x) * 3 + 1] = static_cast<std::uint8_t>(8 * y + 4);
    }
  const Image out = corrupt(ramp, "elastic_transform", severity, seed);
  std::vector<double> a, b;
  for (int y = 8; y < 24; ++y)
    for (int x = 8; x < 24; ++x) {
      a.insert(a.end(), {1.0, static_cast<double>(x), static_cast<double>(y)});
      b.push_back((out.pixels[(y * 32 + x) * 3 + 0] - 4) / 8.0);
      b.push_back((out.pixels[(y * 32 + x) * 3 + 1] - 4) / 8.0);
    }
  const auto n = static_cast<std::int64_t>(b.size() / 2);
  const auto A = torch::tensor(a, torch::kDouble).view({n, 3}), B = torch::tensor(b, torch::kDouble).view({n, 2});
  const auto fit = torch::linalg_solve(A.t().mm(A), A.t().mm(B));
  return (A.mm(fit) - B).pow(2).sum(1).mean().sqrt().item<double>();
}

using Statistic = std::function<double(const Image& clean, const Image& corrupted)>;

// Per corruption, a statistic that grows with severity under the CIFAR-10-C parameters.
const std::map<std::string, Statistic>& statistics() {
  const Statistic difference = [](const Image& c, const Image& x) { return mean_abs_diff(c, x); };
  // Loss of high-frequency energy, for the blurs.
  const Statistic blur = [](const Image& c, const Image& x) { return 1 - high_frequency(x) / high_frequency(c); };
  static const std::map<std::string, Statistic> table = {
      {"gaussian_noise", difference},
      {"shot_noise", difference},
      {"impulse_noise", difference},
      {"defocus_blur", blur},
      {"motion_blur", blur},  // severities 3 and 4 coincide: taps past 12 of (8, 2) weigh < 1e-9
      {"zoom_blur", blur},
      {"snow", difference},
      // The difference is not monotone: a falls (1, 1, .9, .85, .75) while b rises (.2, .3, .4, .4, .45),
      // so .85x + .4f can sit closer to a light x than .9x + .4f. The frost's share b / a rises, and with
      // it the decorrelation from the clean image.
      {"frost", [](const Image& c, const Image& x) { return 1 - correlation(c, x); }},
      {"fog", difference},
      {"brightness", [](const Image&, const Image& x) { return mean_v(x); }},
      {"contrast", [](const Image& c, const Image& x) { return channel_std(c) - channel_std(x); }},
      // Blockiness: nearest-neighbour upsampling from c of the size repeats about 1 - c of the rows and
      // columns. (The difference to the clean image is not monotone: 32 -> 30 -> 32 misaligns more than 28.)
      {"pixelate", [](const Image& c, const Image& x) { return equal_neighbours(x) - equal_neighbours(c); }},
      {"jpeg_compression", difference},
  };
  return table;
}

bool is_random(const std::string& name) {
  for (const char* seedless : {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"})
    if (name == seedless) return false;
  return true;
}

}  // namespace

TEST_CASE("Shapes-C: 15 corruptions, each statistic non-decreasing with severity", "[corruptions]") {
  REQUIRE(corruption_names().size() == 15);
  const auto& images = clean_images();
  for (const auto& [name, statistic] : statistics()) {
    INFO(name);
    std::vector<double> mean(5, 0.0);
    for (int severity = 1; severity <= 5; ++severity)
      for (std::size_t i = 0; i < images.size(); ++i) {
        const Image out = corrupt(images[i], name, severity, corruption_seed(1, static_cast<std::int64_t>(i)));
        REQUIRE(out.width == 32);
        REQUIRE(out.height == 32);
        REQUIRE(out.channels == 3);
        mean[severity - 1] += statistic(images[i], out) / images.size();
      }
    std::string table;
    for (double m : mean) table += std::to_string(m) + " ";
    INFO("severity 1..5: " << table);
    for (int s = 0; s < 4; ++s) CHECK(mean[s + 1] >= mean[s]);
    CHECK(mean[4] > mean[0]);
  }
}

TEST_CASE("Shapes-C glass_blur: more shuffling moves pixels further, more blur removes more detail", "[corruptions]") {
  // CIFAR-10-C's (sigma, iterations) go (.05, 1) (.25, 1) (.4, 1) (.25, 2) (.4, 2): each blur removes
  // some of the shuffle's difference, so no one statistic grows over all five. Each parameter does
  // grow its own: at equal sigma the second shuffle moves pixels further from the clean image, and at
  // equal iterations a larger sigma removes more of the high frequencies the shuffle adds.
  const auto& images = clean_images();
  std::vector<double> difference(5, 0.0), blur(5, 0.0);
  for (int severity = 1; severity <= 5; ++severity)
    for (std::size_t i = 0; i < images.size(); ++i) {
      const Image out = corrupt(images[i], "glass_blur", severity, corruption_seed(1, static_cast<std::int64_t>(i)));
      difference[severity - 1] += mean_abs_diff(images[i], out) / images.size();
      blur[severity - 1] += (1 - high_frequency(out) / high_frequency(images[i])) / images.size();
    }
  CHECK(difference[3] > difference[1]);  // sigma .25: 2 iterations vs 1
  CHECK(difference[4] > difference[2]);  // sigma .4
  CHECK(blur[1] >= blur[0]);             // 1 iteration: sigma .05, .25, .4
  CHECK(blur[2] > blur[1]);
  CHECK(blur[4] > blur[3]);  // 2 iterations: sigma .25, .4
}

TEST_CASE("Shapes-C elastic_transform: the non-affine displacement grows with severity", "[corruptions]") {
  // CIFAR-10-C trades the random affine (0.08 -> 0.03 of the size) for the elastic field (alpha 0 -> 0.1,
  // sigma 0.2 -> 0.03 of the size), so the total displacement and the difference to the clean image shrink
  // from severity 1 to 5; the local, non-affine distortion is what grows. Severity 1 has no elastic field
  // and severity 2's (sigma = 0.2 of the size) is nearly affine: both sit at the 1/16-pixel quantisation
  // floor of the coordinate encoding, hence the tolerance.
  std::vector<double> mean(5, 0.0);
  for (int severity = 1; severity <= 5; ++severity)
    for (std::uint64_t seed = 0; seed < 16; ++seed) mean[severity - 1] += non_affine_displacement(severity, seed) / 16;
  std::string table;
  for (double m : mean) table += std::to_string(m) + " ";
  INFO("severity 1..5: " << table);
  for (int s = 0; s < 4; ++s) CHECK(mean[s + 1] >= mean[s] - 0.005);
  CHECK(mean[4] > mean[0] + 0.2);
  // On Shapes images every severity moves pixels.
  for (int severity = 1; severity <= 5; ++severity)
    CHECK(mean_abs_diff(clean_images()[0], corrupt(clean_images()[0], "elastic_transform", severity, 3)) > 0.5);
}

TEST_CASE("Shapes-C corruptions are deterministic by seed and keep any image size", "[corruptions]") {
  const Image& image = clean_images()[3];
  const Image odd = render_shapes(json::object(), 40, 1)[0];
  for (const auto& name : corruption_names()) {
    INFO(name);
    const Image a = corrupt(image, name, 3, 7);
    CHECK(a.pixels == corrupt(image, name, 3, 7).pixels);
    if (is_random(name))
      CHECK(a.pixels != corrupt(image, name, 3, 8).pixels);
    else
      CHECK(a.pixels == corrupt(image, name, 3, 8).pixels);
    const Image b = corrupt(odd, name, 5, 1);
    CHECK(b.width == 40);
    CHECK(b.height == 40);
    CHECK(b.pixels.size() == odd.pixels.size());
  }
  CHECK(corruption_seed(0, 1) != corruption_seed(0, 2));
  CHECK(corruption_seed(0, 1) != corruption_seed(1, 1));
}

TEST_CASE("Shapes-C errors name the corruption choices and the severity", "[corruptions]") {
  const Image& image = clean_images()[0];
  CHECK_THROWS_WITH(corrupt(image, "rain", 3, 0), Catch::Contains("unknown corruption 'rain'") &&
                                                      Catch::Contains("gaussian_noise") &&
                                                      Catch::Contains("jpeg_compression"));
  CHECK_THROWS_WITH(corrupt(image, "fog", 0, 0), Catch::Contains("severity 0"));
  CHECK_THROWS_WITH(corrupt(image, "fog", 6, 0), Catch::Contains("severity 6"));
  CHECK_THROWS_WITH(corrupt(Image{4, 4, 1, std::vector<std::uint8_t>(16)}, "fog", 1, 0), Catch::Contains("RGB"));
  CHECK_THROWS_WITH(render_shapes(json::object(), 32, 1, nullptr, {"all", 3}), Catch::Contains("folders only"));
  test::TempDir dir("atelier-shapes-c-errors");
  CHECK_THROWS_WITH(write_shapes_folder(json::object(), 16, 1, dir / "out", {"hail", 3}),
                    Catch::Contains("unknown corruption 'hail'"));
  CHECK_THROWS_WITH(write_shapes_folder(json::object(), 16, 1, dir / "out", {"all", 9}), Catch::Contains("severity 9"));
  CHECK_FALSE(fs::exists(dir / "out"));  // checked before anything is written
}

TEST_CASE("Shapes-C folders: class sub-folders like the clean folder, one tree per corruption for all",
          "[corruptions]") {
  test::TempDir dir("atelier-shapes-c");
  write_shapes_folder(json::object(), 16, 4, dir / "clean");
  write_shapes_folder(json::object(), 16, 4, dir / "c", {"all", 2});
  const ImageFolderInfo clean = scan_image_folder(dir / "clean");
  for (const auto& name : corruption_names()) {
    INFO(name);
    const ImageFolderInfo c = scan_image_folder(dir / "c" / name);
    CHECK(c.classes == clean.classes);
    REQUIRE(c.items.size() == clean.items.size());
    CHECK(c.items[0].caption == clean.items[0].caption);
    CHECK(fs::relative(c.items[3].image, dir / "c" / name) == fs::relative(clean.items[3].image, dir / "clean"));
  }
  // The preview (render_shapes) is the folder's first images; each reproduces from corruption_seed.
  const auto preview = render_shapes(json::object(), 16, 4, nullptr, {"snow", 2});
  const Image first = load_image(dir / "c" / "snow" / fs::relative(clean.items[0].image, dir / "clean"));
  const int index = std::stoi(clean.items[0].image.stem().string());
  CHECK(first.pixels == preview[index].pixels);
  CHECK(first.pixels == corrupt(load_image(clean.items[0].image), "snow", 2, corruption_seed(0, index)).pixels);
}

TEST_CASE("atelier shapes --corruption writes a Shapes-C folder; errors name the option", "[corruptions][cli]") {
  test::TempDir dir("atelier-shapes-c-cli");
  const std::string out = (dir / "fog").string();
  auto r = test::run_cli("shapes " + out + " --count 8 --size 16 --corruption fog --severity 3");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("fog severity 3") != std::string::npos);
  write_shapes_folder(shapes_preset("base classes").data, 16, 8, dir / "clean");
  const ImageFolderInfo folder = scan_image_folder(out), clean = scan_image_folder(dir / "clean");
  CHECK(folder.classes == clean.classes);
  REQUIRE(folder.items.size() == 8);
  for (std::size_t i = 0; i < folder.items.size(); ++i) {
    CHECK(fs::relative(folder.items[i].image, out) == fs::relative(clean.items[i].image, dir / "clean"));
    CHECK(load_image(folder.items[i].image).pixels != load_image(clean.items[i].image).pixels);
  }
  auto bad = test::run_cli("shapes " + out + " --corruption rain");
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("--corruption: unknown corruption 'rain'") != std::string::npos);
  auto severity = test::run_cli("shapes " + out + " --corruption fog --severity 7");
  CHECK(severity.exit_code == 2);
  CHECK(severity.output.find("--severity") != std::string::npos);
  auto list = test::run_cli("shapes --corruption list " + out);
  CHECK(list.exit_code == 0);
  for (const auto& name : corruption_names()) CHECK(list.output.find(name) != std::string::npos);
}

TEST_CASE("AugMix: each operation does what it names, the mix is deterministic by seed, errors name the input",
          "[corruptions][augmix]") {
  const Image& x = clean_images()[0];
  // A low-contrast copy: values squeezed into [96, 160].
  Image dull = x;
  for (auto& v : dull.pixels) v = static_cast<std::uint8_t>(96 + v / 4);
  auto range = [](const Image& a) {
    const auto [lo, hi] = std::minmax_element(a.pixels.begin(), a.pixels.end());
    return *hi - *lo;
  };
  CHECK(range(dull) <= 64);
  CHECK(range(augmix_operation(dull, "autocontrast", 1, 1)) >= 250);
  CHECK(range(augmix_operation(dull, "equalize", 1, 1)) >= 200);
  // Posterize at the lowest level keeps 4 bits; solarize at the strongest inverts every value.
  for (const auto v : augmix_operation(x, "posterize", 1, 1).pixels) CHECK((v & 0x0f) == 0);
  const Image inverted = augmix_operation(x, "solarize", 10, 1);
  for (std::size_t i = 0; i < x.pixels.size(); i += 97) CHECK(inverted.pixels[i] == 255 - x.pixels[i]);
  // Geometric operations: level < 1/3 rotates by 0 degrees; translating by a third of the width moves
  // columns over and fills black.
  CHECK(mean_abs_diff(augmix_operation(x, "rotate", 0.2, 1), x) < 1.0);
  const Image moved = augmix_operation(x, "translate_x", 10, 1);  // 10 px of 32 to the left
  CHECK(moved.pixels[(5 * 32 + 31) * 3] == 0);
  CHECK(moved.pixels[(5 * 32 + 0) * 3] == x.pixels[(5 * 32 + 10) * 3]);
  for (const auto& name : augmix_operations()) {
    INFO(name);
    const Image y = augmix_operation(x, name, 1, -1);
    CHECK((y.width == x.width && y.height == x.height && y.channels == 3));
  }
  // The mix: same size, deterministic by seed, different across seeds, and not the input.
  const Image a = augmix(x, {}, 5), b = augmix(x, {}, 5), c = augmix(x, {}, 6);
  CHECK(a.pixels == b.pixels);
  CHECK(a.pixels != c.pixels);
  CHECK((a.width == 32 && a.height == 32));
  double moved_mean = 0;
  for (std::uint64_t seed = 0; seed < 8; ++seed) moved_mean += mean_abs_diff(augmix(x, {}, seed), x) / 8;
  CHECK(moved_mean > 1.0);
  Image gray{4, 4, 1, std::vector<std::uint8_t>(16, 0)};
  CHECK_THROWS_WITH(augmix(gray, {}, 0), Catch::Contains("RGB") && Catch::Contains("1 channel"));
  CHECK_THROWS_WITH(augmix(x, {.severity = 11}, 0), Catch::Contains("severity 11"));
  CHECK_THROWS_WITH(augmix_operation(x, "blur", 1, 1), Catch::Contains("unknown AugMix operation 'blur'"));
}
