// Progress and log reporting shared by every job. A Reporter fans events out to sinks: the CLI's
// terminal bar (TtySink), the run folder's JSON-lines log (JsonlSink) and the GUI (CallbackSink).
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace atelier {

struct Event {
  enum class Type { Progress, Log, Artifact, Metrics };
  enum class Level { Debug, Info, Warn, Error };
  Type type = Type::Log;
  Level level = Level::Info;
  double time = 0;                        // seconds since the Reporter was created
  std::string phase;                      // Progress: e.g. "train", "sample"
  std::int64_t step = 0;                  // Progress
  std::int64_t total = 0;                 // Progress
  double it_per_s = 0;                    // Progress (smoothed)
  double eta_s = 0;                       // Progress
  std::map<std::string, double> scalars;  // Progress/Metrics: loss, val_loss, lr, ...
  std::string message;                    // Log text; Artifact: kind ("preview", "checkpoint", ...)
  std::string path;                       // Artifact

  nlohmann::json to_json() const;
  static Event from_json(const nlohmann::json& j);
};

const char* level_name(Event::Level l);

class Sink {
 public:
  virtual ~Sink() = default;
  virtual void on_event(const Event& e) = 0;
};

class Reporter {
 public:
  Reporter();
  void add_sink(std::shared_ptr<Sink> sink);

  void progress(const std::string& phase, std::int64_t step, std::int64_t total,
                std::map<std::string, double> scalars = {});
  void log(Event::Level level, const std::string& message);
  void info(const std::string& message) { log(Event::Level::Info, message); }
  void warn(const std::string& message) { log(Event::Level::Warn, message); }
  void error(const std::string& message) { log(Event::Level::Error, message); }
  void artifact(const std::string& kind, const std::filesystem::path& path);
  void metrics(const std::map<std::string, double>& values);

 private:
  void emit(Event e);
  std::mutex mutex_;
  std::vector<std::shared_ptr<Sink>> sinks_;
  std::chrono::steady_clock::time_point start_;
  // it/s estimate per phase
  std::string phase_;
  std::int64_t last_step_ = 0;
  double last_time_ = 0;
  double rate_ = 0;
};

// `text` safe to print on a terminal or in a log: valid UTF-8 passes, control characters (but newlines
// and tabs, unless `keep_newlines` is false) and bytes that are not UTF-8 become \xNN. Paths are bytes:
// a folder name that is not UTF-8 prints escaped instead of breaking a log or a terminal.
std::string printable(std::string_view text, bool keep_newlines = true);

// Terminal progress: a redrawn bar on a TTY, a line every few seconds otherwise; logs as lines. Warnings
// and errors read "<program>: warning: ..." / "<program>: error: ..." (just "error: ..." without one).
class TtySink : public Sink {
 public:
  explicit TtySink(std::FILE* out = stderr, bool quiet = false, std::string program = "");
  void on_event(const Event& e) override;

 private:
  std::FILE* out_;
  bool tty_;
  bool quiet_;
  std::string program_;
  bool bar_open_ = false;
  double last_line_ = -1e9;
};

// Appends one JSON object per event to a file (flushed per line, so a killed job keeps its log).
class JsonlSink : public Sink {
 public:
  explicit JsonlSink(const std::filesystem::path& path);
  ~JsonlSink() override;
  void on_event(const Event& e) override;

 private:
  std::FILE* file_ = nullptr;
};

class CallbackSink : public Sink {
 public:
  explicit CallbackSink(std::function<void(const Event&)> fn) : fn_(std::move(fn)) {}
  void on_event(const Event& e) override { fn_(e); }

 private:
  std::function<void(const Event&)> fn_;
};

// Reads a JSON-lines log back (skipping a torn last line).
std::vector<Event> read_jsonl_log(const std::filesystem::path& path);

}  // namespace atelier
