// torch.save zip checkpoints: the restricted unpickler, the zip reader and tensor rebuilding, against
// fixtures from scripts/make_checkpoint_fixtures.py (torch 2.11) and hand-made malformed inputs.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/pickle.h"
#include "core/safetensors.h"
#include "core/torch_zip.h"

namespace fs = std::filesystem;
using atelier::Error;
using atelier::pickle::Value;
using Catch::Contains;

namespace {

fs::path fixture(const std::string& name) {
  return fs::path(ATELIER_SOURCE_DIR) / "tests/fixtures/torch" / name;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

fs::path write_temp(const std::string& name, const std::string& bytes) {
  fs::path dir = fs::temp_directory_path() / "atelier_test_torch_zip";
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
  return dir / name;
}

std::string unhex(std::string_view h) {
  std::string out;
  for (std::size_t k = 0; k + 1 < h.size(); k += 2)
    out += static_cast<char>(std::stoi(std::string(h.substr(k, 2)), nullptr, 16));
  return out;
}

void put(std::string& s, std::uint64_t v, int n) {
  for (int k = 0; k < n; ++k) s += static_cast<char>((v >> (8 * k)) & 0xFF);
}
std::uint64_t get(const std::string& s, std::size_t off, int n) {
  std::uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<std::uint8_t>(s[off + k]);
  return v;
}
void patch(std::string& s, std::size_t off, std::uint64_t v, int n) {
  for (int k = 0; k < n; ++k) s[off + k] = static_cast<char>((v >> (8 * k)) & 0xFF);
}

struct ZipOptions {
  std::uint16_t method = 0;
  std::uint16_t flags = 0;
  bool zip64 = false;  // sizes/offsets through ZIP64 extra fields, plus a ZIP64 end record
};

// A stored zip as torch.save writes it (without torch's alignment padding).
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& members, ZipOptions o = {}) {
  std::string out, dir;
  for (const auto& [name, data] : members) {
    const std::uint64_t local = out.size();
    put(out, 0x04034b50, 4);
    put(out, 20, 2);
    put(out, o.flags, 2);
    put(out, o.method, 2);
    put(out, 0, 8);  // time, date, crc
    put(out, data.size(), 4);
    put(out, data.size(), 4);
    put(out, name.size(), 2);
    put(out, 0, 2);
    out += name + data;

    const std::uint64_t size32 = o.zip64 ? 0xFFFFFFFF : data.size(), local32 = o.zip64 ? 0xFFFFFFFF : local;
    put(dir, 0x02014b50, 4);
    put(dir, 45, 2);
    put(dir, 20, 2);
    put(dir, o.flags, 2);
    put(dir, o.method, 2);
    put(dir, 0, 8);
    put(dir, size32, 4);
    put(dir, size32, 4);
    put(dir, name.size(), 2);
    put(dir, o.zip64 ? 28 : 0, 2);
    put(dir, 0, 10);  // comment length, disk, internal and external attributes
    put(dir, local32, 4);
    dir += name;
    if (o.zip64) {
      put(dir, 1, 2);
      put(dir, 24, 2);
      put(dir, data.size(), 8);
      put(dir, data.size(), 8);
      put(dir, local, 8);
    }
  }
  const std::uint64_t dir_offset = out.size(), n = members.size();
  out += dir;
  if (o.zip64) {
    const std::uint64_t rec = out.size();
    put(out, 0x06064b50, 4);
    put(out, 44, 8);
    put(out, 45, 2);
    put(out, 45, 2);
    put(out, 0, 8);
    put(out, n, 8);
    put(out, n, 8);
    put(out, dir.size(), 8);
    put(out, dir_offset, 8);
    put(out, 0x07064b50, 4);
    put(out, 0, 4);
    put(out, rec, 8);
    put(out, 1, 4);
  }
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  put(out, n, 2);
  put(out, n, 2);
  put(out, dir.size(), 4);
  put(out, dir_offset, 4);
  put(out, 0, 2);
  return out;
}

std::string binunicode(const std::string& s) {
  std::string out = "X";
  put(out, s.size(), 4);
  return out + s;
}
std::string int_tuple(const std::vector<int>& v) {
  std::string out = "(";
  for (int x : v) out += std::string("K") + static_cast<char>(x);
  return out + "t";
}
// data.pkl of {name: _rebuild_tensor_v2(FloatStorage key '0' of `numel`, offset, size, stride, False, {})}.
std::string tensor_pickle(const std::string& name, int numel, int offset, const std::vector<int>& size,
                          const std::vector<int>& stride) {
  std::string p = "\x80\x02}";
  p += binunicode(name);
  p += "ctorch._utils\n_rebuild_tensor_v2\n((";
  p += binunicode("storage");
  p += "ctorch\nFloatStorage\n";
  p += binunicode("0");
  p += binunicode("cpu");
  p += 'K';
  p += static_cast<char>(numel);
  p += "tQK";
  p += static_cast<char>(offset);
  p += int_tuple(size) + int_tuple(stride) + "\x89}tRs.";
  return p;
}
std::string floats(const std::vector<float>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)};
}

// Pickle bytes: opcodes as characters, arguments as numbers.
std::string pk(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s += static_cast<char>(b);
  return s;
}

atelier::pickle::ValuePtr unpickle(const std::string& s, const atelier::pickle::Limits& limits = {}) {
  return atelier::pickle::unpickle(s, {}, limits);
}

void check_against_reference(const std::string& name) {
  INFO(name);
  auto ckpt = atelier::load_torch_checkpoint(fixture(name + ".pt"));
  auto got = atelier::flatten_checkpoint(ckpt);
  auto ref = atelier::safetensors::load(fixture(name + ".ref.safetensors"));
  std::vector<std::string> got_names, ref_names;
  for (const auto& kv : got.tensors) got_names.push_back(kv.first);
  for (const auto& kv : ref.tensors) ref_names.push_back(kv.first);
  REQUIRE(got_names == ref_names);
  for (const auto& [key, expected] : ref.tensors) {
    INFO(key);
    const torch::Tensor& t = got.tensors.at(key);
    REQUIRE(t.scalar_type() == expected.scalar_type());
    REQUIRE(t.sizes() == expected.sizes());
    REQUIRE(torch::equal(t.contiguous(), expected));
  }
  REQUIRE(got.metadata == ref.metadata);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// fixtures written by torch.save

TEST_CASE("torch checkpoints load value-for-value like their safetensors references", "[torch_zip]") {
  for (const char* name : {"sequential", "nested", "views", "dtypes", "weird_name"}) check_against_reference(name);
}

TEST_CASE("torch checkpoint keeps views, strides and shared storages", "[torch_zip]") {
  auto ckpt = atelier::load_torch_checkpoint(fixture("views.pt"));
  CHECK(ckpt.top_folder == "archive");
  auto f = atelier::flatten_checkpoint(ckpt);
  const auto& t = f.tensors;
  CHECK(t.at("transposed").strides() == torch::IntArrayRef{1, 5});
  CHECK(t.at("sliced").storage_offset() == 9);
  CHECK(t.at("sliced").strides() == torch::IntArrayRef{7, 1});
  CHECK(t.at("expanded").strides() == torch::IntArrayRef{0, 1});
  CHECK(t.at("scalar").dim() == 0);
  CHECK(t.at("scalar").item<float>() == 3.5f);
  CHECK(t.at("empty").sizes() == torch::IntArrayRef{0, 3});
  CHECK(t.at("shared_a").is_alias_of(t.at("shared_b")));
  CHECK(!t.at("shared_a").is_alias_of(t.at("sliced")));
}

TEST_CASE("torch checkpoint: nested dicts, Namespace and scalars become names and metadata", "[torch_zip]") {
  auto ckpt = atelier::load_torch_checkpoint(fixture("nested.pt"));
  const auto& args = ckpt.root->get("args");
  REQUIRE(args);
  CHECK(args->is(Value::Kind::Object));
  CHECK(args->s == "argparse.Namespace");
  CHECK(args->repr() == "Namespace(model='DiT-S/2', image_size=32, lr=0.0001, use_ema=True)");
  CHECK(ckpt.root->get("step")->i == 7);
  CHECK(atelier::as_tensor(ckpt.root->get("model")->get("0.weight")) != nullptr);
  CHECK(atelier::as_tensor(ckpt.root->get("step")) == nullptr);
  auto f = atelier::flatten_checkpoint(ckpt);
  CHECK(f.metadata.at("step") == "7");
  CHECK(f.metadata.count("model._metadata") == 0);  // OrderedDict attributes (BUILD state) are not items
}

TEST_CASE("torch checkpoint: uint16 and float8 through _rebuild_tensor_v3", "[torch_zip]") {
  auto f = atelier::flatten_checkpoint(atelier::load_torch_checkpoint(fixture("v3.pt")));
  auto ref = atelier::safetensors::load(fixture("v3.ref.safetensors"));
  const torch::Tensor& u16 = f.tensors.at("u16");
  const torch::Tensor& f8 = f.tensors.at("f8");
  CHECK(u16.scalar_type() == torch::kUInt16);
  CHECK(f8.scalar_type() == torch::kFloat8_e4m3fn);
  CHECK(torch::equal(u16.to(torch::kDouble), ref.tensors.at("u16").to(torch::kDouble)));
  CHECK(torch::equal(f8.to(torch::kDouble), ref.tensors.at("f8").to(torch::kDouble)));
  CHECK(u16.to(torch::kLong)[0][2].item<std::int64_t>() == 65535);
  CHECK(f8.to(torch::kFloat)[2].item<float>() == 448.0f);
}

TEST_CASE("torch checkpoint: top folder named after the saved file; parameters unwrap", "[torch_zip]") {
  auto ckpt = atelier::load_torch_checkpoint(fixture("weird_name.pt"));
  CHECK(ckpt.top_folder == "weird_name");
  CHECK(atelier::as_tensor(ckpt.root->get("p")) != nullptr);
}

TEST_CASE("zip reader: ZIP64 extra fields and unaligned members", "[torch_zip]") {
  std::string pkl = tensor_pickle("w", 3, 1, {2}, {1});
  for (bool zip64 : {false, true}) {
    std::string zip = make_zip({{"top/data.pkl", pkl}, {"top/data/0", floats({1, 2, 3})}}, {0, 0, zip64});
    auto entries = atelier::read_zip_directory(zip);
    REQUIRE(entries.size() == 2);
    CHECK(entries[1].name == "top/data/0");
    CHECK(entries[1].size == 12);
    CHECK(zip.substr(entries[1].offset, 12) == floats({1, 2, 3}));
    auto ckpt = atelier::load_torch_checkpoint(write_temp(zip64 ? "zip64.pt" : "zip32.pt", zip));
    CHECK(ckpt.top_folder == "top");
    CHECK(torch::equal(*atelier::as_tensor(ckpt.root->get("w")), torch::tensor({2.0f, 3.0f})));
  }
}

// ---------------------------------------------------------------------------------------------------
// unpickler

TEST_CASE("unpickler reads the opcodes of protocols 0, 2 and 4", "[torch_zip]") {
  // pickle.dumps({'a': [1, -2, 3.5, True, None, 'é', b'\x00\x01', (1, 2), {1, 2}, 2**40, -2**63, 1e-05, 100.0]})
  const char* p0 =
      "286470300a56610a70310a286c70320a49310a61492d320a6146332e350a614930310a614e6156e90a70330a61635f636f646563730a656e"
      "636f64650a70340a28565c7530303030010a70350a566c6174696e310a70360a7470370a5270380a612849310a49320a7470390a61635f5f"
      "6275696c74696e5f5f0a7365740a7031300a28286c7031310a49310a6149320a61747031320a527031330a614c3130393935313136323737"
      "37364c0a614c2d393232333337323033363835343737353830384c0a614631652d30350a61463130302e300a61732e";
  const char* p2 =
      "80027d710058010000006171015d7102284b014afeffffff47400c000000000000884e5802000000c3a97103635f636f646563730a656e63"
      "6f64650a710458020000000001710558060000006c6174696e3171068671075271084b014b02867109635f5f6275696c74696e5f5f0a7365"
      "740a710a5d710b284b014b026585710c52710d8a060000000000018a080000000000000080473ee4f8b588e368f147405900000000000065"
      "732e";
  const char* p4 =
      "8004955a000000000000007d948c0161945d94284b014afeffffff47400c000000000000884e8c02c3a99443020001944b014b0286948f94"
      "284b014b02908a060000000000018a080000000000000080473ee4f8b588e368f147405900000000000065732e";
  for (const char* hex : {p0, p2, p4}) {
    auto v = unpickle(unhex(hex));
    REQUIRE(v->is(Value::Kind::Dict));
    auto a = v->get("a");
    REQUIRE(a);
    REQUIRE(a->items.size() == 13);
    CHECK(a->items[0]->i == 1);
    CHECK(a->items[1]->i == -2);
    CHECK(a->items[2]->f == 3.5);
    CHECK(a->items[3]->is(Value::Kind::Bool));
    CHECK(a->items[3]->b);
    CHECK(a->items[4]->is(Value::Kind::None));
    CHECK(a->items[5]->s == "\xc3\xa9");
    CHECK(a->items[7]->repr() == "(1, 2)");
    CHECK(a->items[8]->repr() == "[1, 2]");  // sets are lists
    CHECK(a->items[9]->i == (std::int64_t{1} << 40));
    CHECK(a->items[10]->i == INT64_MIN);
    CHECK(a->items[11]->repr() == "1e-05");
    CHECK(a->items[12]->repr() == "100.0");
  }
  CHECK(unpickle(unhex(p4))->get("a")->items[6]->s == std::string("\0\1", 2));
}

TEST_CASE("unpickler: protocol 0 objects, memo cycles and repr limits", "[torch_zip]") {
  std::string ns =
      "ccopy_reg\n_reconstructor\np0\n(cargparse\nNamespace\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n("
      "dp5\nVx\np6\nI1\nsb.";
  CHECK(unpickle(ns)->repr() == "Namespace(x=1)");

  // l = []; l.append(l): the back-reference is cut to None.
  auto cyc = unpickle(pk({0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'}));
  REQUIRE(cyc->items.size() == 1);
  CHECK(cyc->items[0]->is(Value::Kind::None));

  // A hand-made cycle: repr stops at its depth cap.
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::List;
  v->items.push_back(v);
  CHECK(v->repr(1000).find("...") != std::string::npos);
  v->items.clear();

  auto big = std::make_shared<Value>();
  big->kind = Value::Kind::List;
  for (int k = 0; k < 1000; ++k) big->items.push_back(atelier::pickle::make_int(k));
  CHECK(big->repr(50).size() == 50);
}

TEST_CASE("unpickler rejects malformed pickles with the opcode and offset", "[torch_zip]") {
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, 0x82, 1, '.'})),
                      Contains("unsupported pickle opcode 0x82 (EXT1) at byte 2"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, 'N', 0x97, '.'})), Contains("unsupported pickle opcode 0x97"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, ']'})), Contains("STOP missing"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, 'h', 5, '.'})), Contains("BINGET at byte 2: memo index 5 not defined"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, ']', 'K', 1, 'e', '.'})), Contains("APPENDS at byte 5: MARK missing"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, 'X', 16, 0, 0, 0, 'a', 'b'})), Contains("BINUNICODE at byte 2: truncated"));
  REQUIRE_THROWS_WITH(unpickle(pk({'X', 0xff, 0xff, 0xff, 0x7f})), Contains("truncated: needs 2147483647 bytes"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f})),
                      Contains("BINUNICODE8 at byte 0: truncated"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, '0', '.'})), Contains("POP at byte 2: stack underflow"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, ']', '(', 'K', 1, 'K', 2, 'u', '.'})),
                      Contains("SETITEMS at byte 8: cannot set items"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x8a, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, '.'})), Contains("9 bytes does not fit"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 6, 'N', '.'})), Contains("unsupported protocol 6"));
  REQUIRE_THROWS_WITH(unpickle(pk({0x80, 2, 'N', 'N', 'N', 'q', 0, 'q', 1, 'q', 2, '.'}), {.max_memo = 2}),
                      Contains("memo larger than 2"));
  REQUIRE_THROWS_AS(unpickle(pk({0x80, 2, 'N', 'Q', '.'})), Error);  // persistent id without a handler
}

TEST_CASE("unpickler fails fast on recursion bombs", "[torch_zip]") {
  // 100000 nested lists: [[[[...]]]]
  std::string nested = "\x80\x02" + std::string(100000, ']') + std::string(99999, 'a') + ".";
  REQUIRE_THROWS_WITH(unpickle(nested), Contains("nesting deeper than 1000 levels"));
  // The same chain, built and dropped (POP): garbage is freed without recursion.
  CHECK(unpickle("\x80\x02" + std::string(100000, ']') + std::string(99999, 'a') + "0N.")->is(Value::Kind::None));
  REQUIRE_THROWS_WITH(unpickle(std::string(100000, '(')), Contains("MARKs nested deeper than 1000"));
  // a = []; b = [a]; a.append(b); return b: a cycle made through the memo after the fact, cut at a.
  auto v = unpickle(pk({0x80, 2, ']', 'q', 0, ']', 'q', 1, 'h', 0, 'a', '0', 'h', 1, 'a', '0', 'h', 1, '.'}));
  CHECK(v->repr() == "[[None]]");
}

// ---------------------------------------------------------------------------------------------------
// malformed archives

TEST_CASE("torch checkpoint rejects malformed archives with the path and the problem", "[torch_zip]") {
  const std::string good = read_bytes(fixture("sequential.pt"));
  REQUIRE(good.size() > 1000);
  auto load = [](const std::string& name, const std::string& bytes) {
    return atelier::load_torch_checkpoint(write_temp(name, bytes));
  };
  auto path_of = [](const std::string& name) {
    return (fs::temp_directory_path() / "atelier_test_torch_zip" / name).string();
  };

  SECTION("truncated zip") {
    REQUIRE_THROWS_WITH(load("cut.pt", good.substr(0, good.size() * 6 / 10)),
                        Contains(path_of("cut.pt") + ": zip end-of-central-directory record not found"));
    REQUIRE_THROWS_WITH(load("tiny.pt", good.substr(0, 10)), Contains("not a zip archive (10 bytes)"));
  }
  SECTION("legacy torch.save format") {
    REQUIRE_THROWS_WITH(
        load("legacy.pt", pk({0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19})),
        Contains("legacy (non-zip) torch.save format"));
  }
  SECTION("EOCD missing") {
    std::string bad = good;
    patch(bad, bad.rfind("PK\x05\x06"), 0, 4);
    REQUIRE_THROWS_WITH(load("no_eocd.pt", bad), Contains("end-of-central-directory record not found"));
  }
  const std::size_t locator = good.rfind("PK\x05\x06") - 20;
  REQUIRE(get(good, locator, 4) == 0x07064b50);  // torch writes ZIP64 end records
  const std::size_t rec = get(good, locator + 8, 8);
  SECTION("directory count past EOF") {
    std::string bad = good;
    patch(bad, rec + 32, std::uint64_t{1} << 40, 8);
    REQUIRE_THROWS_WITH(load("count.pt", bad), Contains("claims 1099511627776 entries but has room for"));
  }
  SECTION("directory offset past EOF") {
    std::string bad = good;
    patch(bad, rec + 48, good.size() + 1, 8);
    REQUIRE_THROWS_WITH(load("dir_off.pt", bad),
                        Contains("central directory") && Contains("runs past the end of the file"));
  }
  SECTION("member data past EOF") {
    std::string bad = good;
    const std::size_t central = bad.find("archive/data/2", bad.find("archive/data/2") + 1) - 46;
    REQUIRE(get(bad, central, 4) == 0x02014b50);
    patch(bad, central + 20, 0x7FFFFFFF, 4);
    patch(bad, central + 24, 0x7FFFFFFF, 4);
    REQUIRE_THROWS_WITH(load("past.pt", bad), Contains("zip member archive/data/2: data (2147483647 bytes"));
  }
  SECTION("storage member missing") {
    std::string bad = good;
    for (std::size_t at = bad.find("archive/data/0"); at != std::string::npos; at = bad.find("archive/data/0", at))
      bad[at + 13] = 'Z';
    REQUIRE_THROWS_WITH(load("no_storage.pt", bad), Contains("storage '0': member archive/data/0 is missing"));
  }
  SECTION("compressed or encrypted member") {
    REQUIRE_THROWS_WITH(load("deflate.pt", make_zip({{"archive/data.pkl", "x"}}, {8, 0, false})),
                        Contains("compressed member archive/data.pkl: torch.save archives are stored uncompressed"));
    REQUIRE_THROWS_WITH(load("crypt.pt", make_zip({{"archive/data.pkl", "x"}}, {0, 1, false})),
                        Contains("encrypted member archive/data.pkl"));
  }
  SECTION("zip without data.pkl") {
    REQUIRE_THROWS_WITH(load("no_pkl.pt", make_zip({{"archive/version", "3"}})), Contains("zip without data.pkl"));
  }
  SECTION("big-endian byte order") {
    auto zip = make_zip({{"archive/data.pkl", "N."}, {"archive/byteorder", "big"}});
    REQUIRE_THROWS_WITH(load("big.pt", zip), Contains("byte order 'big' is not supported"));
  }
  SECTION("data.pkl with an unsupported opcode, truncated, or without STOP") {
    REQUIRE_THROWS_WITH(load("op.pt", make_zip({{"archive/data.pkl", pk({0x80, 2, 0x82, 1, '.'})}})),
                        Contains(path_of("op.pt") + ": archive/data.pkl: unsupported pickle opcode 0x82"));
    std::string pkl = tensor_pickle("w", 3, 0, {3}, {1});
    REQUIRE_THROWS_WITH(load("trunc_pkl.pt", make_zip({{"archive/data.pkl", pkl.substr(0, 40)}})),
                        Contains("truncated"));
    pkl.pop_back();
    REQUIRE_THROWS_WITH(
        load("no_stop.pt", make_zip({{"archive/data.pkl", pkl}, {"archive/data/0", floats({1, 2, 3})}})),
        Contains("STOP missing"));
  }
  SECTION("tensor strides exceeding the storage") {
    auto zip = make_zip(
        {{"archive/data.pkl", tensor_pickle("blocks.0.w", 4, 0, {3}, {2})}, {"archive/data/0", floats({1, 2, 3, 4})}});
    REQUIRE_THROWS_WITH(
        load("strides.pt", zip),
        Contains("blocks.0.w: tensor of size [3], stride [2], offset 0 needs 5 elements but its storage has 4"));
    zip = make_zip(
        {{"archive/data.pkl", tensor_pickle("w", 4, 3, {2, 2}, {1, 1})}, {"archive/data/0", floats({1, 2, 3, 4})}});
    REQUIRE_THROWS_WITH(load("offset.pt", zip), Contains("w: tensor of size [2, 2]"));
  }
  SECTION("a view with more elements than its storage (stride 0): refused before anything is allocated") {
    // 255^4 elements over one float: written out contiguously, a few hundred bytes would become 16 GB.
    auto zip = make_zip({{"archive/data.pkl", tensor_pickle("w", 1, 0, {255, 255, 255, 255}, {0, 0, 0, 0})},
                         {"archive/data/0", floats({1})}});
    REQUIRE_THROWS_WITH(load("expanded.pt", zip),
                        Contains("w: tensor of size [255, 255, 255, 255]") && Contains("bytes of storage"));
  }
  SECTION("storage smaller than its numel") {
    auto zip = make_zip({{"archive/data.pkl", tensor_pickle("w", 4, 0, {4}, {1})}, {"archive/data/0", floats({1, 2})}});
    REQUIRE_THROWS_WITH(load("short.pt", zip),
                        Contains("storage '0' needs 4 x 4 bytes but member archive/data/0 has 8"));
  }
}
