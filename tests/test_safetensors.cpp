// safetensors reader/writer: parity with the reference Python package (fixtures written by
// scripts/make_safetensors_fixtures.py), round trips, atomic saves and the F8 decoders.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <random>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
namespace st = atelier::safetensors;
using atelier::json;

namespace {

const fs::path kFixtures = fs::path(ATELIER_SOURCE_DIR) / "tests" / "fixtures" / "safetensors";

// A fresh folder under the system temp dir, removed with its contents at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("atelier-test-st-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

st::DType dtype_named(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(st::DType::F64); ++i)
    if (st::dtype_name(static_cast<st::DType>(i)) == name) return static_cast<st::DType>(i);
  FAIL("unknown dtype " << name);
  return st::DType::F32;
}

bool is_float(st::DType d) {
  using D = st::DType;
  return d == D::F8_E5M2 || d == D::F8_E4M3 || d == D::F16 || d == D::BF16 || d == D::F32 || d == D::F64;
}

// Exact value of integer/bool element i, read from the raw bytes (so U64 above INT64_MAX survives).
json int_element(const torch::Tensor& t, std::int64_t i, st::DType d) {
  const auto* p = static_cast<const std::uint8_t*>(t.data_ptr()) + i * t.element_size();
  auto get = [p](auto v) {
    std::memcpy(&v, p, sizeof v);
    return json(v);
  };
  using D = st::DType;
  switch (d) {
    case D::BOOL: return json(static_cast<int>(*p));
    case D::U8: return get(std::uint8_t{});
    case D::I8: return get(std::int8_t{});
    case D::I16: return get(std::int16_t{});
    case D::U16: return get(std::uint16_t{});
    case D::I32: return get(std::int32_t{});
    case D::U32: return get(std::uint32_t{});
    case D::I64: return get(std::int64_t{});
    case D::U64: return get(std::uint64_t{});
    default: FAIL("not an integer dtype");
  }
  return {};
}

bool same_double(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

// Compares a loaded tensor with its reference entry {"dtype", "shape", "values"} value for value.
void check_against_reference(const std::string& name, const torch::Tensor& t, const json& ref) {
  INFO("tensor " << name);
  st::DType d = dtype_named(ref.at("dtype").get<std::string>());
  REQUIRE(t.scalar_type() == st::torch_dtype(d));
  REQUIRE(t.sizes().vec() == ref.at("shape").get<std::vector<std::int64_t>>());
  const json& values = ref.at("values");
  REQUIRE(t.numel() == static_cast<std::int64_t>(values.size()));
  torch::Tensor c = t.contiguous();
  if (is_float(d)) {
    torch::Tensor as_double = c.to(torch::kDouble);
    const double* got = as_double.data_ptr<double>();
    for (std::int64_t i = 0; i < c.numel(); ++i) {
      double want = std::strtod(values[i].get<std::string>().c_str(), nullptr);
      INFO("element " << i << ": got " << got[i] << ", want " << values[i]);
      CHECK(same_double(got[i], want));
    }
  } else {
    for (std::int64_t i = 0; i < c.numel(); ++i) {
      INFO("element " << i);
      CHECK(int_element(c, i, d) == values[i]);
    }
  }
}

json read_json(const fs::path& path) {
  return atelier::load_json_file(path);
}

std::string bytes_of(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return {static_cast<const char*>(c.data_ptr()), static_cast<std::size_t>(c.numel() * c.element_size())};
}

bool temp_files_left(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

// One tensor of every dtype the writer supports, with arbitrary bit patterns (NaNs included), plus a
// non-contiguous view, a zero-size tensor and a scalar.
atelier::TensorMap every_dtype_tensors() {
  torch::manual_seed(0);
  atelier::TensorMap t;
  auto raw = [](std::int64_t rows, std::int64_t bytes_per_row) {
    return torch::randint(0, 256, {rows, bytes_per_row}, torch::kByte);
  };
  const std::vector<torch::ScalarType> types = {
      torch::kByte,   torch::kChar, torch::kFloat8_e5m2, torch::kFloat8_e4m3fn, torch::kShort,
      torch::kUInt16, torch::kHalf, torch::kBFloat16,    torch::kInt,           torch::kUInt32,
      torch::kFloat,  torch::kLong, torch::kUInt64,      torch::kDouble};
  for (auto type : types)
    t[std::string("t_") + c10::toString(type)] = raw(3, 8 * 5).view(type);  // [3, 40 / element size]
  t["t_Bool"] = torch::randint(0, 2, {4, 3}, torch::kByte).to(torch::kBool);
  t["transposed"] = torch::arange(12, torch::kFloat).reshape({3, 4}).t();
  t["empty"] = torch::zeros({2, 0, 3}, torch::kBFloat16);
  t["scalar"] = torch::tensor(-7, torch::kLong).reshape({});
  return t;
}

}  // namespace

TEST_CASE("Python-written file with every dtype loads value for value", "[safetensors]") {
  json ref = read_json(kFixtures / "all_dtypes.json");
  st::Reader reader(kFixtures / "all_dtypes.safetensors");
  REQUIRE(reader.header().entries.size() == ref["tensors"].size());
  atelier::TensorFile file = reader.load_all();
  REQUIRE(file.tensors.size() == ref["tensors"].size());
  for (const auto& [name, entry] : ref["tensors"].items()) {
    REQUIRE(file.tensors.count(name) == 1);
    check_against_reference(name, file.tensors.at(name), entry);
  }
  SECTION("metadata, zero-size tensor and scalar") {
    CHECK(file.metadata == ref["metadata"].get<atelier::Metadata>());
    CHECK(file.metadata.at("atelier.note") == "naïve \"quoted\"\nline\twith ✓ and \\ backslash");
    CHECK(file.tensors.at("empty").sizes().vec() == std::vector<std::int64_t>{0, 3});
    CHECK(file.tensors.at("scalar").dim() == 0);
    CHECK(file.tensors.at("scalar").item<float>() == 0.25f);
  }
  SECTION("F8 tensors hold every bit pattern, decoded as torch decodes them") {
    for (const char* name : {"f8_e4m3", "f8_e5m2"}) {
      const json& values = ref["tensors"][name]["values"];
      for (int v = 0; v < 256; ++v) {
        double want = std::strtod(values[v].get<std::string>().c_str(), nullptr);
        float got = std::string(name) == "f8_e4m3" ? st::decode_f8_e4m3(static_cast<std::uint8_t>(v))
                                                   : st::decode_f8_e5m2(static_cast<std::uint8_t>(v));
        INFO(name << " byte " << v);
        CHECK(same_double(got, want));
      }
    }
  }
}

TEST_CASE("Data buffer at an odd file offset loads correctly", "[safetensors]") {
  st::Reader reader(kFixtures / "unaligned.safetensors");
  REQUIRE(reader.header().data_start % 2 == 1);  // the fixture's point: nothing is aligned
  json ref = read_json(kFixtures / "unaligned.json");
  atelier::TensorFile file = reader.load_all();
  REQUIRE(file.tensors.size() == ref["tensors"].size());
  for (const auto& [name, entry] : ref["tensors"].items()) check_against_reference(name, file.tensors.at(name), entry);
  CHECK(reader.load("b_f32")[2].item<float>() == static_cast<float>(std::numbers::pi));
}

TEST_CASE("serialize gives the reference writer's exact bytes", "[safetensors]") {
  SECTION("tensors rebuilt from their description") {
    json spec = read_json(kFixtures / "identity.json");
    atelier::TensorMap tensors;
    for (const auto& e : spec["tensors"]) {
      auto shape = e["shape"].get<std::vector<std::int64_t>>();
      std::int64_t numel = 1;
      for (auto s : shape) numel *= s;
      auto dtype = st::torch_dtype(dtype_named(e["dtype"].get<std::string>()));
      tensors[e["name"].get<std::string>()] = torch::arange(numel, torch::kDouble).to(dtype).reshape(shape);
    }
    std::string ours = st::serialize(tensors, spec["metadata"].get<atelier::Metadata>());
    std::string theirs = atelier::read_file(kFixtures / "identity.safetensors");
    CHECK(ours.size() == theirs.size());
    CHECK(ours.substr(0, 400) == theirs.substr(0, 400));  // readable diff of the header when it fails
    CHECK(ours == theirs);
  }
  SECTION("Python-written file loaded and written again") {
    for (const char* name : {"all_dtypes.safetensors", "identity.safetensors"}) {
      INFO(name);
      atelier::TensorFile file = st::load(kFixtures / name);
      CHECK(st::serialize(file.tensors, file.metadata) == atelier::read_file(kFixtures / name));
    }
  }
}

TEST_CASE("save then load round-trips every dtype", "[safetensors]") {
  TempDir dir;
  atelier::TensorMap tensors = every_dtype_tensors();
  atelier::Metadata meta = {{"a", "1"}, {"b", "two words"}, {"ünï", "✓\n\"q\""}, {"empty", ""}};
  fs::path path = dir.path / "sub" / "all.safetensors";  // parent folders are created
  st::save(path, tensors, meta);
  CHECK(dir.listing() == std::vector<std::string>{"sub"});
  CHECK_FALSE(temp_files_left(path.parent_path()));

  atelier::TensorFile back = st::load(path);
  CHECK(back.metadata == meta);
  REQUIRE(back.tensors.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    REQUIRE(back.tensors.count(name) == 1);
    const torch::Tensor& b = back.tensors.at(name);
    CHECK(b.scalar_type() == t.scalar_type());
    CHECK(b.sizes() == t.sizes());
    CHECK(b.is_contiguous());
    CHECK(bytes_of(b) == bytes_of(t));
  }
  CHECK(st::serialize(back.tensors, back.metadata) == atelier::read_file(path));

  SECTION("empty metadata writes no __metadata__ and reads back empty") {
    st::save(path, {{"x", torch::ones({2})}});
    CHECK(atelier::read_file(path).find("__metadata__") == std::string::npos);
    CHECK(st::load(path).metadata.empty());
  }
  SECTION("Reader: header order, find, load by name") {
    st::Reader reader(path);
    const auto& entries = reader.header().entries;
    for (std::size_t i = 1; i < entries.size(); ++i) CHECK(entries[i - 1].end == entries[i].begin);
    CHECK(reader.header().data_start % 8 == 0);  // header padded to a multiple of 8
    REQUIRE(reader.find("t_Double") != nullptr);
    CHECK(reader.find("t_Double")->dtype == st::DType::F64);
    CHECK(reader.find("nope") == nullptr);
    CHECK(torch::equal(reader.load("transposed"), tensors.at("transposed")));
    REQUIRE_THROWS_WITH(reader.load("nope"),
                        Catch::Contains("no tensor named 'nope'") && Catch::Contains(path.string()));
  }
}

TEST_CASE("load_some loads only the named tensors and lists missing ones", "[safetensors]") {
  TempDir dir;
  fs::path path = dir.path / "w.safetensors";
  st::save(path, {{"a", torch::ones({2})}, {"b", torch::zeros({3}, torch::kHalf)}, {"c", torch::arange(4)}});
  st::Reader reader(path);
  atelier::TensorMap some = reader.load_some({"a", "c"});
  CHECK(some.size() == 2);
  CHECK(torch::equal(some.at("c"), torch::arange(4)));
  CHECK(reader.load_some({}).empty());
  REQUIRE_THROWS_AS(reader.load_some({"a", "missing.one"}), atelier::Error);
  REQUIRE_THROWS_WITH(reader.load_some({"a", "missing.one", "missing.two"}),
                      Catch::Contains("missing tensors: missing.one, missing.two") && Catch::Contains("w.safetensors"));
}

TEST_CASE("A failing save leaves the old file intact and no temporary files", "[safetensors]") {
  TempDir dir;
  fs::path path = dir.path / "model.safetensors";
  st::save(path, {{"w", torch::arange(6, torch::kFloat)}});
  const std::string before = atelier::read_file(path);

  SECTION("undefined tensor") {
    REQUIRE_THROWS_WITH(st::save(path, {{"ok", torch::ones({1})}, {"bad", torch::Tensor()}}),
                        Catch::Contains("tensor 'bad' is undefined") && Catch::Contains(path.string()));
  }
  SECTION("dtype without a safetensors name") {
    REQUIRE_THROWS_WITH(st::save(path, {{"z", torch::zeros({2}, torch::kComplexFloat)}}),
                        Catch::Contains("tensor 'z'") && Catch::Contains("no safetensors equivalent"));
  }
  SECTION("AtomicFile destroyed without commit") {
    {
      atelier::AtomicFile f(path);
      f.write("partial");
      CHECK(fs::exists(f.temp_path()));
    }
  }
  CHECK(atelier::read_file(path) == before);
  CHECK(dir.listing() == std::vector<std::string>{"model.safetensors"});

  SECTION("a new file is not created when the save fails") {
    fs::path fresh = dir.path / "fresh.safetensors";
    REQUIRE_THROWS_AS(st::save(fresh, {{"bad", torch::Tensor()}}), atelier::Error);
    CHECK_FALSE(fs::exists(fresh));
    CHECK_FALSE(temp_files_left(dir.path));
  }
}

TEST_CASE("F8 decoders match torch's float8 conversion for all 256 values", "[safetensors]") {
  torch::Tensor bits = torch::arange(256, torch::kInt).to(torch::kByte);
  torch::Tensor e4m3 = bits.view(torch::kFloat8_e4m3fn).to(torch::kFloat);
  torch::Tensor e5m2 = bits.view(torch::kFloat8_e5m2).to(torch::kFloat);
  for (int v = 0; v < 256; ++v) {
    INFO("byte " << v);
    CHECK(same_double(st::decode_f8_e4m3(static_cast<std::uint8_t>(v)), e4m3[v].item<float>()));
    CHECK(same_double(st::decode_f8_e5m2(static_cast<std::uint8_t>(v)), e5m2[v].item<float>()));
  }
  CHECK(st::decode_f8_e4m3(0x7E) == 448.0f);
  CHECK(std::isnan(st::decode_f8_e4m3(0xFF)));
  CHECK(st::decode_f8_e4m3(0x01) == std::ldexp(1.0f, -9));
  CHECK(st::decode_f8_e5m2(0x7B) == 57344.0f);
  CHECK(std::isinf(st::decode_f8_e5m2(0xFC)));
  CHECK(st::decode_f8_e5m2(0x01) == std::ldexp(1.0f, -16));
}
