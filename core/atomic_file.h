// Atomic file writes: data goes to "<path>.tmp-<pid>-<n>" in the same folder, is fsync'ed, then renamed
// over the target (and the folder fsync'ed). A crash or kill leaves either the old file or the new one,
// never a half-written file. Every writer in Atelier goes through this.
#pragma once
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace atelier {

class AtomicFile {
 public:
  // Opens a temporary file next to `path` (creating parent folders). Throws Error on failure.
  explicit AtomicFile(std::filesystem::path path);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Flushes, fsyncs and renames over the target. Throws Error on failure (the target is untouched).
  void commit();
  std::FILE* stream() { return file_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

void write_file_atomic(const std::filesystem::path& path, std::string_view contents);
// Reads a whole file; throws Error naming the path if it is missing or unreadable.
std::string read_file(const std::filesystem::path& path);

}  // namespace atelier
