#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/report.h"
#include "tests/helpers.h"

using namespace atelier;

namespace {
struct DemoConfig {
  std::int64_t steps = 10;
  double lr = 0.5;
  bool ema = true;
  std::string sampler = "ddim";
  std::vector<std::int64_t> classes{1, 2};
  template <class V>
  void fields(V& v) {
    v("steps", steps, "steps", Range{1, 100});
    v("lr", lr, "learning rate", Range{0, 1});
    v("ema", ema, "keep an EMA");
    v("sampler", sampler, "sampler", Choices{"ddim", "euler"});
    v("classes", classes, "class ids", Range{0, 9});
  }
};
}  // namespace

TEST_CASE("config reads typed fields with defaults and round-trips", "[config]") {
  auto c = from_json<DemoConfig>(json{{"steps", 20}, {"sampler", "euler"}, {"classes", {3, 4, 5}}});
  CHECK(c.steps == 20);
  CHECK(c.lr == 0.5);
  CHECK(c.sampler == "euler");
  CHECK(c.classes == std::vector<std::int64_t>{3, 4, 5});
  json j = to_json(c);
  CHECK(j.size() == 5);
  auto again = from_json<DemoConfig>(j);
  CHECK(to_json(again) == j);
  CHECK(from_json<DemoConfig>(json{{"steps", 3.0}}).steps == 3);  // integral floats accepted
}

TEST_CASE("config rejects bad input naming the key", "[config]") {
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"stpes", 5}}),
                    Catch::Contains("unknown key 'stpes'") && Catch::Contains("did you mean 'steps'"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"steps", "many"}}), Catch::Contains("field 'steps': expected int"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"steps", 2.5}}), Catch::Contains("field 'steps'"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"steps", 1000}}), Catch::Contains("outside [1, 100]"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"sampler", "plms"}}), Catch::Contains("not one of: ddim, euler"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"classes", {1, 20}}}), Catch::Contains("field 'classes'"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"ema", 1}}), Catch::Contains("expected bool"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json{{"steps", 1e300}}), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(from_json<DemoConfig>(json::array()), Catch::Contains("JSON object"));
  CHECK_NOTHROW(from_json<DemoConfig>(json{{"kind", "x"}}, {"kind"}));
}

TEST_CASE("config description lists every field with type, default and range", "[config]") {
  auto fields = describe<DemoConfig>();
  REQUIRE(fields.size() == 5);
  CHECK(fields[0].name == "steps");
  CHECK(fields[0].type == "int");
  CHECK(fields[0].default_value == 10);
  CHECK(fields[0].range->max == 100);
  CHECK(fields[3].choices == std::vector<std::string>{"ddim", "euler"});
  CHECK(fields[4].type == "list[int]");
}

TEST_CASE("overrides parse JSON values and fall back to strings", "[config]") {
  json j = json::object();
  apply_override(j, "steps=5");
  apply_override(j, "sampler=euler");
  apply_override(j, "classes=[1,2]");
  CHECK(j["steps"] == 5);
  CHECK(j["sampler"] == "euler");
  CHECK(j["classes"] == json::array({1, 2}));
  CHECK_THROWS_WITH(apply_override(j, "novalue"), Catch::Contains("key=value"));
}

TEST_CASE("JSON-lines log round-trips events and skips a torn last line", "[config]") {
  test::TempDir dir;
  {
    Reporter r;
    r.add_sink(std::make_shared<JsonlSink>(dir / "log.jsonl"));
    r.progress("train", 1, 10, {{"loss", 0.5}});
    r.warn("careful");
    r.artifact("preview", "a.png");
  }
  {
    std::FILE* f = std::fopen((dir / "log.jsonl").c_str(), "ab");
    std::fputs("{\"type\":\"progr", f);
    std::fclose(f);
  }
  auto events = read_jsonl_log(dir / "log.jsonl");
  REQUIRE(events.size() == 3);
  CHECK(events[0].type == Event::Type::Progress);
  CHECK(events[0].scalars.at("loss") == 0.5);
  CHECK(events[1].level == Event::Level::Warn);
  CHECK(events[2].path == "a.png");
}

TEST_CASE("with_field names its field once, and wraps other errors", "[config]") {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const FieldError& e) {
      return e.field() + " | " + e.what();
    }
    return std::string("no error");
  };
  CHECK(message([] { with_field("styles", [] { fail("bad file"); }); }) == "styles | field 'styles': bad file");
  CHECK(message([] { with_field("styles", [] { fail_field("styles", "'neon' is not a style"); }); }) ==
        "styles | field 'styles': 'neon' is not a style");
  CHECK(message([] { with_field("teacher", [] { fail_field("classes", "empty"); }); }) ==
        "teacher | field 'teacher': field 'classes': empty");
}
