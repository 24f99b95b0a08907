#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace atelier {
namespace fs = std::filesystem;

namespace {
std::atomic<unsigned> g_counter{0};

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  std::error_code ec;
  if (path_.has_parent_path()) fs::create_directories(path_.parent_path(), ec);
  if (ec) fail(path_.parent_path().string(), ": cannot create folder: ", ec.message());
  temp_ = path_;
  temp_ += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(g_counter++);
  file_ = std::fopen(temp_.c_str(), "wb");
  if (file_ == nullptr) fail(path_.string(), ": cannot write: ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) {
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void AtomicFile::write(const void* data, std::size_t size) {
  if (size > 0 && std::fwrite(data, 1, size, file_) != size)
    fail(path_.string(), ": write failed: ", std::strerror(errno));
}

void AtomicFile::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    fail(path_.string(), ": flush failed: ", std::strerror(errno));
  int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) fail(path_.string(), ": close failed: ", std::strerror(errno));
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) fail(path_.string(), ": rename failed: ", std::strerror(errno));
  committed_ = true;
  fsync_dir(path_.parent_path());
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open: ", std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path.string(), ": read failed");
  return data;
}

}  // namespace atelier
