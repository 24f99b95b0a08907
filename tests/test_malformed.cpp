// Malformed inputs: every bad safetensors file, config, job file and image must end in an atelier::Error
// that names what is wrong (and the file), and the CLI must turn it into one line on stderr, a non-zero
// exit and no output file.
#include <sys/wait.h>
#include <torch/torch.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/error.h"
#include "core/image.h"
#include "core/safetensors.h"
#include "studio/job_registry.h"
#include "studio/runner.h"

namespace fs = std::filesystem;
namespace st = atelier::safetensors;
using atelier::json;
using Catch::Contains;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("atelier-test-bad-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const std::string& bytes) const {
    fs::path p = path / name;
    atelier::write_file_atomic(p, bytes);
    return p;
  }
  bool has_temp_files() const {
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
    return false;
  }
};

// 8-byte little-endian header length (`declared`, default the header's size), header, data.
std::string st_bytes(const std::string& header, const std::string& data = "", std::uint64_t declared = UINT64_MAX) {
  std::uint64_t n = declared == UINT64_MAX ? header.size() : declared;
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

// A header with one tensor `name`: {"dtype": dtype, "shape": shape, "data_offsets": offsets}.
std::string one(const std::string& dtype, const std::string& shape, const std::string& offsets,
                const std::string& name = "w") {
  return "{\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}}";
}

// Loads `bytes` from a file through the real reader; the Error must name the file.
void load_bytes(const std::string& bytes) {
  TempDir dir;
  fs::path p = dir.write("bad.safetensors", bytes);
  try {
    st::load(p);
  } catch (const atelier::Error& e) {
    CHECK_THAT(e.what(), Contains(p.string()));
    throw;
  }
}

struct TestConfig {
  std::int64_t steps = 10;
  double lr = 1e-3;
  std::string sampler = "ddim";
  std::vector<std::int64_t> sizes = {8};
  bool ema = false;
  template <class V>
  void fields(V& v) {
    v("steps", steps, "optimizer steps", atelier::Range{1, 1e6});
    v("lr", lr, "learning rate", atelier::Range{0, 1});
    v("sampler", sampler, "sampler", atelier::Choices{"ddim", "euler"});
    v("sizes", sizes, "image sizes");
    v("ema", ema, "keep an EMA copy");
  }
};

void run_nothing(const TestConfig&, atelier::JobContext&) {}

// Runs the CLI in `cwd` with stdout and stderr captured to files there; returns the exit code.
struct CliResult {
  int code = -1;
  std::string out, err;
};
CliResult run_cli(const fs::path& cwd, const std::string& args) {
  fs::path out = cwd / ".stdout", err = cwd / ".stderr";
  std::string cmd = "cd '" + cwd.string() + "' && '" + ATELIER_CLI + "' " + args + " >'" + out.string() + "' 2>'" +
                    err.string() + "'";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = atelier::read_file(out);
  r.err = atelier::read_file(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

// The CLI's error contract: non-zero exit, exactly one line on stderr, "atelier: error: ..." naming `what`.
void check_cli_error(const CliResult& r, const std::string& what) {
  INFO("stderr: " << r.err);
  CHECK(r.code != 0);
  CHECK(r.err.rfind("atelier: error:", 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(!r.err.empty());
  CHECK(r.err.back() == '\n');
  CHECK_THAT(r.err, Contains(what));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// safetensors

TEST_CASE("safetensors: file shorter than the 8-byte length", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(""), Contains("file too small") && Contains("(0 bytes)"));
  REQUIRE_THROWS_WITH(load_bytes(std::string("\x05\x00\x00", 3)), Contains("file too small") && Contains("(3 bytes)"));
}

TEST_CASE("safetensors: header length over 100 MB", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{}", "", 200'000'000)),
                      Contains("header length 200000000 exceeds the 100 MB limit"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{}", "", UINT64_MAX - 1)), Contains("exceeds the 100 MB limit"));
}

TEST_CASE("safetensors: header length past the end of the file", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{}", "", 100)),
                      Contains("header length 100 runs past the end of the file (10 bytes)"));
}

TEST_CASE("safetensors: header not UTF-8", "[malformed]") {
  for (std::string bad : {"\xff", "\xc0\x80" /* overlong */, "\xed\xa0\x80" /* surrogate */, "\xe2\x82" /* cut */}) {
    std::string header = "{\"a" + bad + "\":{}}";
    REQUIRE_THROWS_WITH(load_bytes(st_bytes(header)), Contains("header is not valid UTF-8"));
  }
  CHECK(st::parse(st_bytes("{\"__metadata__\":{\"k\":\"naïve ✓ 𝄞\"}}")).metadata.at("k") == "naïve ✓ 𝄞");
}

TEST_CASE("safetensors: header not JSON", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"w\": {")), Contains("header is not valid JSON"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("")), Contains("header is not valid JSON"));
}

TEST_CASE("safetensors: header JSON not an object", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("[1, 2]")), Contains("header JSON is not an object"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"w\": 3}")), Contains("tensor 'w': entry is not an object"));
}

TEST_CASE("safetensors: gap between tensors", "[malformed]") {
  std::string header =
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}";
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(header, "12345")),
                      Contains("tensor 'b': data_offsets [3, 5] leave a gap (expected to start at 2)"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[2]", "[1,3]"), "123")), Contains("leave a gap"));
}

TEST_CASE("safetensors: overlapping tensors", "[malformed]") {
  std::string header =
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}";
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(header, "123456")), Contains("tensor 'b': data_offsets [2, 6] overlap"));
}

TEST_CASE("safetensors: data_offsets end before begin", "[malformed]") {
  std::string header =
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}";
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(header, "1234")), Contains("tensor 'b': data_offsets end 2 < begin 4"));
}

TEST_CASE("safetensors: data_offsets not two non-negative integers", "[malformed]") {
  for (const char* offsets : {"[0]", "[0,1,2]", "[-1,1]", "\"0,1\"", "[0,1.5]"})
    REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[1]", offsets), "1")),
                        Contains("tensor 'w': 'data_offsets' must be two non-negative integers"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", "1")),
                      Contains("'data_offsets'"));
}

TEST_CASE("safetensors: unknown dtype", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("F7", "[1]", "[0,1]"), "1")),
                      Contains("tensor 'w': unsupported dtype 'F7'"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("f32", "[1]", "[0,4]"), "1234")), Contains("unsupported dtype 'f32'"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,1]}}", "1")),
                      Contains("missing or non-string 'dtype'"));
}

TEST_CASE("safetensors: shape not an array of non-negative integers", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "3", "[0,3]"), "123")),
                      Contains("tensor 'w': missing or non-array 'shape'"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[-3]", "[0,3]"), "123")),
                      Contains("tensor 'w': shape entries must be non-negative integers"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[1.5]", "[0,3]"), "123")),
                      Contains("shape entries must be non-negative"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[9223372036854775808]", "[0,3]"), "123")),
                      Contains("shape entries must be non-negative"));
}

TEST_CASE("safetensors: byte count differs from dtype size times shape", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("F32", "[3]", "[0,8]"), "12345678")),
                      Contains("tensor 'w': F32 shape needs 12 bytes but data_offsets span 8"));
}

TEST_CASE("safetensors: element count times bits overflows", "[malformed]") {
  // numel overflows, then numel fits but numel * 32 bits does not.
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[4294967296,4294967296]", "[0,1]"), "1")),
                      Contains("tensor 'w': shape size overflows"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("F32", "[4611686018427387904]", "[0,1]"), "1")),
                      Contains("tensor 'w': shape size overflows"));
  // A zero dimension makes any other size fine.
  CHECK(st::parse(st_bytes(one("F64", "[0,9223372036854775807]", "[0,0]"))).entries.size() == 1);
}

TEST_CASE("safetensors: trailing bytes after the last tensor", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("U8", "[2]", "[0,2]"), "123")),
                      Contains("tensor data ends at byte 2 of a 3-byte buffer (trailing bytes)"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{}", "x")), Contains("trailing bytes"));
}

TEST_CASE("safetensors: data truncated", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(one("F32", "[4]", "[0,16]"), "1234567")),
                      Contains("tensor data ends at byte 16 of a 7-byte buffer (truncated file)"));
}

TEST_CASE("safetensors: __metadata__ not a string-to-string object", "[malformed]") {
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"__metadata__\":{\"k\":1}}")),
                      Contains("'__metadata__' value of 'k' is not a string"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"__metadata__\":{\"k\":{\"n\":\"v\"}}}")),
                      Contains("value of 'k' is not a string"));
  REQUIRE_THROWS_WITH(load_bytes(st_bytes("{\"__metadata__\":[\"k\"]}")), Contains("'__metadata__' is not an object"));
}

TEST_CASE("safetensors: unknown field in a tensor entry", "[malformed]") {
  std::string header = "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"strides\":[1]}}";
  REQUIRE_THROWS_WITH(load_bytes(st_bytes(header, "1")), Contains("tensor 'w': unknown field 'strides'"));
}

TEST_CASE("safetensors: whitespace around the header JSON is accepted", "[malformed]") {
  st::Header h = st::parse(st_bytes("  \n" + one("U8", "[2]", "[0,2]") + "    ", "ab"));
  REQUIRE(h.entries.size() == 1);
  CHECK(h.data_start == 8 + 3 + one("U8", "[2]", "[0,2]").size() + 4);
}

TEST_CASE("safetensors: missing file and folders", "[malformed]") {
  TempDir dir;
  REQUIRE_THROWS_WITH(st::load(dir.path / "nope.safetensors"),
                      Contains((dir.path / "nope.safetensors").string()) && Contains("cannot open"));
  REQUIRE_THROWS_WITH(st::Reader(dir.path), Contains(dir.path.string()) && Contains("not a regular file"));
}

TEST_CASE("safetensors: save into a path that cannot be written leaves nothing", "[malformed]") {
  TempDir dir;
  fs::path blocker = dir.write("file", "x");
  REQUIRE_THROWS_WITH(st::save(blocker / "out.safetensors", {{"w", torch::ones({1})}}),
                      Contains((blocker / "out.safetensors").string()));
  CHECK(atelier::read_file(blocker) == "x");
  CHECK_FALSE(dir.has_temp_files());
}

// ---------------------------------------------------------------------------------------------------
// configs and job files

TEST_CASE("config: wrong type for a field", "[malformed]") {
  using atelier::from_json;
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"steps", "ten"}}),
                      Contains("field 'steps': expected int, got string \"ten\""));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"steps", 1.5}}), Contains("field 'steps': expected int"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"lr", true}}), Contains("field 'lr': expected float, got boolean"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"ema", 1}}), Contains("field 'ema': expected bool"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"sizes", json::array({1, "a"})}}),
                      Contains("field 'sizes': expected list[int]"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"sizes", 8}}),
                      Contains("field 'sizes': expected list[int], got number"));
  CHECK(from_json<TestConfig>(json{{"steps", 20.0}}).steps == 20);  // integral floats are ints
}

TEST_CASE("config: unknown key names it and suggests a close one", "[malformed]") {
  using atelier::from_json;
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"stpes", 3}}),
                      Contains("unknown key 'stpes' (did you mean 'steps'?)"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"sampler", "ddim"}, {"emma", true}}),
                      Contains("unknown key 'emma' (did you mean 'ema'?)"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"completely_different", 3}}),
                      Contains("unknown key 'completely_different'") && !Contains("did you mean"));
  CHECK(from_json<TestConfig>(json{{"kind", "x"}}, {"kind"}).steps == 10);  // ignored keys pass
}

TEST_CASE("config: value out of range", "[malformed]") {
  using atelier::from_json;
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"steps", 0}}), Contains("field 'steps': 0 is outside [1, 1e+06]"));
  REQUIRE_THROWS_WITH(from_json<TestConfig>(json{{"lr", -0.5}}), Contains("field 'lr': -0.5 is outside [0, 1]"));
}

TEST_CASE("config: value not among the choices", "[malformed]") {
  REQUIRE_THROWS_WITH(atelier::from_json<TestConfig>(json{{"sampler", "heun"}}),
                      Contains("field 'sampler': 'heun' is not one of: ddim, euler"));
}

TEST_CASE("config: document not an object, bad override", "[malformed]") {
  REQUIRE_THROWS_WITH(atelier::from_json<TestConfig>(json::array({1})),
                      Contains("config must be a JSON object, got array"));
  json j = json::object();
  REQUIRE_THROWS_WITH(atelier::apply_override(j, "steps"), Contains("override 'steps' is not of the form key=value"));
  REQUIRE_THROWS_WITH(atelier::apply_override(j, "=3"), Contains("not of the form key=value"));
}

TEST_CASE("JSON files: invalid JSON names the file, a missing file names the path", "[malformed]") {
  TempDir dir;
  fs::path bad = dir.write("job.json", "{\n  \"kind\": \"x\",\n  \"steps\": \n}\n");
  REQUIRE_THROWS_WITH(atelier::load_json_file(bad),
                      Contains(bad.string()) && Contains("invalid JSON") && Contains("line 4"));
  REQUIRE_THROWS_WITH(atelier::load_json_file(dir.write("empty.json", "")), Contains("empty.json: invalid JSON"));
  REQUIRE_THROWS_WITH(atelier::load_json_file(dir.path / "missing.json"),
                      Contains((dir.path / "missing.json").string()) && Contains("cannot open"));
}

TEST_CASE("job files: runner errors name the job file", "[malformed]") {
  TempDir dir;
  atelier::JobRegistry registry;
  registry.add<TestConfig>("test_kind", "a job kind for tests", &run_nothing);
  atelier::JobRunner runner(registry);
  auto prepare = [&](const std::string& text) {
    atelier::RunRequest r = atelier::load_job_file(dir.write("job.json", text));
    r.run_dir = dir.path / "run";
    return runner.prepare(r);
  };
  const std::string file = (dir.path / "job.json").string();
  REQUIRE_THROWS_WITH(prepare("{\"kind\": \"nope\"}"), Contains(file + ": unknown job kind 'nope' (known: test_kind)"));
  REQUIRE_THROWS_WITH(prepare("{\"steps\": 3}"), Contains(file + ": missing key 'kind'"));
  REQUIRE_THROWS_WITH(prepare("{\"kind\": 3}"), Contains(file + ": key 'kind' must be a string"));
  REQUIRE_THROWS_WITH(prepare("[1]"), Contains(file + ": a job must be a JSON object"));
  REQUIRE_THROWS_WITH(prepare("{\"kind\": \"test_kind\", \"steps\": \"x\"}"),
                      Contains(file + ": field 'steps': expected int"));
  REQUIRE_THROWS_WITH(prepare("{\"kind\": \"test_kind\", \"stepz\": 2}"),
                      Contains(file + ": unknown key 'stepz' (did you mean 'steps'?)"));
  CHECK(prepare("{\"kind\": \"test_kind\", \"steps\": 2}").effective["steps"] == 2);
  CHECK_FALSE(fs::exists(dir.path / "run"));  // prepare never touches the disk
}

// ---------------------------------------------------------------------------------------------------
// images

TEST_CASE("images: garbage, empty, missing and truncated files name the file", "[malformed]") {
  TempDir dir;
  fs::path garbage = dir.write("garbage.png", std::string("\x89PNG\r\n\x1a\n", 8) + "this is not a PNG stream at all");
  REQUIRE_THROWS_WITH(atelier::load_image(garbage), Contains(garbage.string() + ": cannot decode image"));
  fs::path empty = dir.write("empty.png", "");
  REQUIRE_THROWS_WITH(atelier::load_image(empty), Contains(empty.string() + ": cannot decode image"));
  REQUIRE_THROWS_WITH(atelier::load_image(dir.path / "missing.png"),
                      Contains((dir.path / "missing.png").string()) && Contains("cannot open"));
  REQUIRE_THROWS_WITH(atelier::decode_image("not an image", "upload #3"), Contains("upload #3: cannot decode image"));

  // A valid PNG cut in half.
  atelier::Image img{4, 4, 3, std::vector<std::uint8_t>(48, 200)};
  std::string png = atelier::encode_png(img, {{"atelier.config", "{}"}});
  fs::path cut = dir.write("cut.png", png.substr(0, png.size() / 2));
  REQUIRE_THROWS_WITH(atelier::load_image(cut), Contains(cut.string()));
}

TEST_CASE("images: PNG text chunks of non-PNG or truncated files", "[malformed]") {
  TempDir dir;
  fs::path jpeg_like = dir.write("x.png", "\xFF\xD8\xFF\xE0 not png");
  REQUIRE_THROWS_WITH(atelier::read_png_text(jpeg_like), Contains(jpeg_like.string() + ": not a PNG file"));
  // Signature, then a tEXt chunk claiming 4096 bytes.
  fs::path truncated = dir.write("t.png", std::string("\x89PNG\r\n\x1a\n\x00\x00\x10\x00tEXtab\0cd\0\0\0\0", 25));
  REQUIRE_THROWS_WITH(atelier::read_png_text(truncated), Contains(truncated.string() + ": truncated PNG chunk"));
}

TEST_CASE("images: invalid image data is rejected and nothing is written", "[malformed]") {
  TempDir dir;
  fs::path out = dir.path / "out.png";
  REQUIRE_THROWS_WITH(atelier::save_png(out, atelier::Image{0, 4, 3, {}}), Contains("invalid image (0x4x3, 0 bytes)"));
  REQUIRE_THROWS_WITH(atelier::save_png(out, atelier::Image{2, 2, 3, std::vector<std::uint8_t>(5)}),
                      Contains(out.string()));
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(dir.has_temp_files());
  REQUIRE_THROWS_WITH(atelier::tensor_to_image(torch::zeros({4, 4})), Contains("expected an image tensor [C, H, W]"));
  REQUIRE_THROWS_WITH(atelier::tensor_to_image(torch::zeros({5, 4, 4})), Contains("1-4 channels"));
}

// ---------------------------------------------------------------------------------------------------
// the CLI

TEST_CASE("CLI: bad inputs give one error line, a non-zero exit and no output file", "[malformed][cli]") {
  TempDir dir;
  const fs::path& d = dir.path;
  dir.write("trailing.safetensors", st_bytes(one("U8", "[2]", "[0,2]"), "123"));
  dir.write("empty.safetensors", "");
  dir.write("garbage.png", std::string("\x89PNG\r\n\x1a\n", 8) + "junk junk junk");
  dir.write("bad.pt", std::string("PK\x03\x04", 4) + "not really a zip archive");
  dir.write("bad.json", "{\"kind\": \"x\",,}");
  dir.write("unknown_kind.json", "{\"kind\": \"no_such_kind\"}");
  atelier::TensorMap good_tensors = {{"w", torch::ones({2})}};
  st::save(d / "good.safetensors", good_tensors);

  SECTION("inspect") {
    check_cli_error(run_cli(d, "inspect trailing.safetensors"), "trailing.safetensors");
    check_cli_error(run_cli(d, "inspect empty.safetensors"), "empty.safetensors");
    check_cli_error(run_cli(d, "inspect missing.safetensors"), "missing.safetensors");
    check_cli_error(run_cli(d, "inspect garbage.png"), "garbage.png");
    check_cli_error(run_cli(d, "inspect bad.pt"), "bad.pt");
  }
  SECTION("convert") {
    check_cli_error(run_cli(d, "convert trailing.safetensors out.safetensors"), "trailing.safetensors");
    check_cli_error(run_cli(d, "convert bad.pt out.safetensors"), "bad.pt");
    check_cli_error(run_cli(d, "convert good.safetensors out.safetensors --dtype f7"), "--dtype");
    check_cli_error(run_cli(d, "convert good.safetensors good.safetensors/out.safetensors"),
                    "good.safetensors/out.safetensors");
    CHECK_FALSE(fs::exists(d / "out.safetensors"));
    CHECK(atelier::read_file(d / "good.safetensors") == st::serialize(good_tensors));
  }
  SECTION("run") {
    check_cli_error(run_cli(d, "run bad.json"), "bad.json");
    check_cli_error(run_cli(d, "run unknown_kind.json"), "unknown_kind.json");
    check_cli_error(run_cli(d, "run missing.json"), "missing.json");
    const auto& kinds = atelier::JobRegistry::builtin().kinds();
    if (!kinds.empty()) {
      dir.write("bad_field.json", json{{"kind", kinds.front().name}, {"definitely_not_a_field", 1}}.dump());
      CliResult r = run_cli(d, "run bad_field.json");
      check_cli_error(r, "bad_field.json");
      CHECK_THAT(r.err, Contains("unknown key 'definitely_not_a_field'"));
    }
    CHECK_FALSE(fs::exists(d / "runs"));  // a job that fails validation creates no run folder
  }
  CHECK_FALSE(dir.has_temp_files());
}
