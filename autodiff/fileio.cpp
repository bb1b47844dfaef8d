#include "autodiff/fileio.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "autodiff/tensor.hpp"

namespace ad {

static std::string errno_text() { return std::strerror(errno); }

std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp." + std::to_string((long)getpid()) + "." + std::to_string(counter++);
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  if (path.empty()) fail("write_file_atomic: empty path");
  const std::string tmp = temp_path_for(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot write '" + path + "': creating temporary file '" + tmp + "' failed: " + errno_text());
  auto abort_write = [&](const std::string& what) {
    const std::string err = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write '" + path + "': " + what + ": " + err + " (previous file, if any, left unchanged)");
  };
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      abort_write("write failed after " + std::to_string(size - left) + " of " + std::to_string(size) + " bytes");
    }
    p += n;
    left -= (size_t)n;
  }
  if (::fsync(fd) != 0) abort_write("fsync failed");
  if (::close(fd) != 0) {
    const std::string err = errno_text();
    ::unlink(tmp.c_str());
    fail("cannot write '" + path + "': close failed: " + err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_text();
    ::unlink(tmp.c_str());
    fail("cannot write '" + path + "': rename from '" + tmp + "' failed: " + err);
  }
  // Make the rename itself durable. Failure to open the directory is not an error: the
  // data is complete and in place either way.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// The pid of a temp_path_for name ("<name>.tmp.<pid>.<n>"), or -1 for any other name.
static long temp_file_pid(const std::string& name) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || at == 0) return -1;
  const std::string rest = name.substr(at + 5);
  const size_t dot = rest.find('.');
  auto digits = [](const std::string& t) {
    return !t.empty() && t.size() <= 18 && t.find_first_not_of("0123456789") == std::string::npos;
  };
  if (dot == std::string::npos || !digits(rest.substr(0, dot)) || !digits(rest.substr(dot + 1))) return -1;
  return std::stol(rest.substr(0, dot));
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const long pid = temp_file_pid(name);
    if (pid <= 0 || !entry.is_regular_file(ec)) continue;
    // kill(pid, 0) fails with ESRCH only when no such process exists (EPERM: it runs).
    const bool running = pid == (long)getpid() || ::kill((pid_t)pid, 0) == 0 || errno == EPERM;
    if (!running && std::filesystem::remove(entry.path(), ec)) removed.push_back(name);
  }
  return removed;
}

void prepare_output_dir(const std::string& dir) {
  if (dir.empty()) fail("prepare_output_dir: empty folder name");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    fail("cannot create output folder '" + dir + "': " + (ec ? ec.message() : "a file of that name exists"));
  const std::string probe = dir + "/.pd_write_probe." + std::to_string((long)getpid());
  try {
    write_file_atomic(probe, "probe\n");
  } catch (const Error& e) {
    fail("output folder '" + dir + "' is not writable: " + e.what());
  }
  ::unlink(probe.c_str());
  remove_stale_temp_files(dir);
}

std::string read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot open '" + path + "': " + errno_text());
  std::string out;
  char buf[1 << 16];
  size_t n;
  errno = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const bool bad = std::ferror(f);
  const std::string err = errno == EISDIR ? "it is a folder, not a file" : errno_text();
  std::fclose(f);
  if (bad) fail("error reading '" + path + "': " + err);
  return out;
}

}  // namespace ad
