#include "core/report.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace atelier {
namespace {
const char* type_name(Event::Type t) {
  switch (t) {
    case Event::Type::Progress: return "progress";
    case Event::Type::Log: return "log";
    case Event::Type::Artifact: return "artifact";
    case Event::Type::Metrics: return "metrics";
  }
  return "log";
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  auto t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  return buf;
}
}  // namespace

const char* level_name(Event::Level l) {
  switch (l) {
    case Event::Level::Debug: return "debug";
    case Event::Level::Info: return "info";
    case Event::Level::Warn: return "warn";
    case Event::Level::Error: return "error";
  }
  return "info";
}

nlohmann::json Event::to_json() const {
  nlohmann::json j = {{"type", type_name(type)}, {"time", std::round(time * 1000) / 1000}};
  switch (type) {
    case Type::Progress:
      j["phase"] = phase;
      j["step"] = step;
      j["total"] = total;
      j["it_per_s"] = it_per_s;
      j["eta_s"] = eta_s;
      if (!scalars.empty()) j["scalars"] = scalars;
      break;
    case Type::Log:
      j["level"] = level_name(level);
      j["message"] = message;
      break;
    case Type::Artifact:
      j["kind"] = message;
      j["path"] = path;
      break;
    case Type::Metrics: j["scalars"] = scalars; break;
  }
  return j;
}

Event Event::from_json(const nlohmann::json& j) {
  Event e;
  std::string t = j.value("type", "log");
  e.type = t == "progress"   ? Type::Progress
           : t == "artifact" ? Type::Artifact
           : t == "metrics"  ? Type::Metrics
                             : Type::Log;
  e.time = j.value("time", 0.0);
  e.phase = j.value("phase", "");
  e.step = j.value("step", std::int64_t{0});
  e.total = j.value("total", std::int64_t{0});
  e.it_per_s = j.value("it_per_s", 0.0);
  e.eta_s = j.value("eta_s", 0.0);
  if (j.contains("scalars")) e.scalars = j["scalars"].get<std::map<std::string, double>>();
  std::string level = j.value("level", "info");
  e.level = level == "error"   ? Level::Error
            : level == "warn"  ? Level::Warn
            : level == "debug" ? Level::Debug
                               : Level::Info;
  e.message = e.type == Type::Artifact ? j.value("kind", "") : j.value("message", "");
  e.path = j.value("path", "");
  return e;
}

Reporter::Reporter() : start_(std::chrono::steady_clock::now()) {}

void Reporter::add_sink(std::shared_ptr<Sink> sink) {
  std::lock_guard<std::mutex> lock(mutex_);
  sinks_.push_back(std::move(sink));
}

void Reporter::emit(Event e) {
  e.time = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  for (auto& s : sinks_) s->on_event(e);
}

void Reporter::progress(const std::string& phase, std::int64_t step, std::int64_t total,
                        std::map<std::string, double> scalars) {
  std::lock_guard<std::mutex> lock(mutex_);
  double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (phase != phase_ || step < last_step_) {
    phase_ = phase;
    rate_ = 0;
    last_step_ = step;
    last_time_ = now;
  } else if (step > last_step_ && now > last_time_) {
    double inst = static_cast<double>(step - last_step_) / (now - last_time_);
    rate_ = rate_ == 0 ? inst : 0.8 * rate_ + 0.2 * inst;
    last_step_ = step;
    last_time_ = now;
  }
  Event e;
  e.type = Event::Type::Progress;
  e.phase = phase;
  e.step = step;
  e.total = total;
  e.it_per_s = rate_;
  e.eta_s = rate_ > 0 ? static_cast<double>(total - step) / rate_ : -1;
  e.scalars = std::move(scalars);
  emit(std::move(e));
}

void Reporter::log(Event::Level level, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  Event e;
  e.type = Event::Type::Log;
  e.level = level;
  e.message = message;
  emit(std::move(e));
}

void Reporter::artifact(const std::string& kind, const std::filesystem::path& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  Event e;
  e.type = Event::Type::Artifact;
  e.message = kind;
  e.path = path.string();
  emit(std::move(e));
}

void Reporter::metrics(const std::map<std::string, double>& values) {
  std::lock_guard<std::mutex> lock(mutex_);
  Event e;
  e.type = Event::Type::Metrics;
  e.scalars = values;
  emit(std::move(e));
}

std::string printable(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  auto escape = [&](unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if ((c < 0x20 && !(keep_newlines && (c == '\n' || c == '\t'))) || c == 0x7f)
        escape(c);
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A UTF-8 sequence: lead byte, length, continuation bytes, no overlong forms or surrogates.
    const int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size();
    for (int k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (ok && n >= 3) {
      const auto c1 = static_cast<unsigned char>(text[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0) && !(c == 0xf0 && c1 < 0x90) &&
           !(c == 0xf4 && c1 >= 0x90);
    }
    if (ok && n == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) ok = false;  // C1 controls
    if (!ok) {
      escape(c);
      ++i;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

TtySink::TtySink(std::FILE* out, bool quiet, std::string program)
    : out_(out), tty_(::isatty(::fileno(out)) != 0), quiet_(quiet), program_(std::move(program)) {}

void TtySink::on_event(const Event& e) {
  if (e.type == Event::Type::Progress) {
    if (quiet_) return;
    std::string scal;
    for (const auto& [k, v] : e.scalars) {
      char buf[64];
      std::snprintf(buf, sizeof buf, " %s %.4g", k.c_str(), v);
      scal += buf;
    }
    double frac = e.total > 0 ? static_cast<double>(e.step) / static_cast<double>(e.total) : 0;
    if (tty_) {
      int width = 24, filled = static_cast<int>(frac * width);
      std::string bar(filled, '#');
      bar.resize(width, '-');
      std::fprintf(out_, "\r\033[K%s [%s] %lld/%lld %.2f it/s eta %s%s", e.phase.c_str(), bar.c_str(),
                   static_cast<long long>(e.step), static_cast<long long>(e.total), e.it_per_s,
                   format_duration(e.eta_s).c_str(), scal.c_str());
      bar_open_ = true;
    } else if (e.time - last_line_ >= 5 || e.step == e.total) {
      std::fprintf(out_, "%s %lld/%lld %.2f it/s eta %s%s\n", e.phase.c_str(), static_cast<long long>(e.step),
                   static_cast<long long>(e.total), e.it_per_s, format_duration(e.eta_s).c_str(), scal.c_str());
      last_line_ = e.time;
    }
    std::fflush(out_);
    return;
  }
  if (bar_open_) {
    std::fputc('\n', out_);
    bar_open_ = false;
  }
  if (e.type == Event::Type::Log) {
    if (quiet_ && e.level < Event::Level::Warn) return;
    const std::string message = printable(e.message);
    if (e.level == Event::Level::Info)
      std::fprintf(out_, "%s\n", message.c_str());
    else
      std::fprintf(out_, "%s%s: %s\n", program_.empty() ? "" : (program_ + ": ").c_str(),
                   e.level == Event::Level::Warn ? "warning" : level_name(e.level), message.c_str());
  } else if (e.type == Event::Type::Artifact && !quiet_) {
    std::fprintf(out_, "wrote %s: %s\n", e.message.c_str(), printable(e.path).c_str());
  } else if (e.type == Event::Type::Metrics && !quiet_) {
    for (const auto& [k, v] : e.scalars) std::fprintf(out_, "  %s = %.6g\n", k.c_str(), v);
  }
  std::fflush(out_);
}

JsonlSink::JsonlSink(const std::filesystem::path& path) {
  file_ = std::fopen(path.c_str(), "ab");
  if (file_ == nullptr) fail(path.string(), ": cannot open log: ", std::strerror(errno));
}

JsonlSink::~JsonlSink() {
  if (file_ != nullptr) std::fclose(file_);
}

void JsonlSink::on_event(const Event& e) {
  // Messages and paths are bytes; what is not UTF-8 is replaced rather than failing the log.
  std::string line = e.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

std::vector<Event> read_jsonl_log(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail(path.string(), ": cannot open log");
  std::vector<Event> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;  // torn line of a killed run
    out.push_back(Event::from_json(j));
  }
  return out;
}

}  // namespace atelier
