#include "tests/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>

#include "autodiff/error.hpp"
#include "autodiff/parallel.hpp"

namespace testutil {

namespace {

void child_setup(unsigned seconds) {
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM}) signal(sig, SIG_DFL);  // not doctest's
  alarm(seconds);
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t k; (k = read(fd, buf, sizeof buf)) > 0;) out.append(buf, (size_t)k);
  return out;
}

std::string died(int status) {
  if (WIFSIGNALED(status))
    return "(child killed by signal " + std::to_string(WTERMSIG(status)) +
           (WTERMSIG(status) == SIGALRM ? ": over its time limit)" : ": crashed)");
  return "(child exited with code " + std::to_string(WEXITSTATUS(status)) + " without a result: a sanitizer report?)";
}

// In the child: runs f(i) for i in [first, n), one record per case on fd: a kind byte
// (R returned, E ad::Error, X other exception), a 4-byte length, the message.
[[noreturn]] void child_cases(int64_t first, int64_t n, const std::function<void(int64_t)>& f, unsigned seconds, int fd) {
  child_setup(seconds);
  ad::set_num_threads(1);  // the pool's workers do not exist in a forked child
  for (int64_t i = first; i < n; ++i) {
    alarm(seconds);
    char kind = 'R';
    std::string msg;
    try {
      f(i);
    } catch (const ad::Error& e) {
      kind = 'E', msg = e.what();
    } catch (const std::exception& e) {
      kind = 'X', msg = e.what();
    } catch (...) {
      kind = 'X', msg = "(an exception that is not a std::exception)";
    }
    const uint32_t len = (uint32_t)msg.size();
    std::string rec(1, kind);
    rec.append(reinterpret_cast<const char*>(&len), 4).append(msg);
    for (size_t done = 0; done < rec.size();) {
      const ssize_t k = write(fd, rec.data() + done, rec.size() - done);
      if (k <= 0) _exit(3);
      done += (size_t)k;
    }
  }
  _exit(0);
}

ChildResult::Kind kind_of(char c) {
  return c == 'R' ? ChildResult::returned : c == 'E' ? ChildResult::error : ChildResult::other_exception;
}

}  // namespace

std::vector<ChildResult> run_cases_in_children(int64_t n, const std::function<void(int64_t)>& f, unsigned seconds) {
  std::vector<ChildResult> out;
  while ((int64_t)out.size() < n) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      close(fds[0]);
      child_cases((int64_t)out.size(), n, f, seconds, fds[1]);
    }
    close(fds[1]);
    const std::string got = read_all(fds[0]);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    for (size_t at = 0; at + 5 <= got.size();) {
      uint32_t len = 0;
      std::memcpy(&len, got.data() + at + 1, 4);
      if (at + 5 + len > got.size()) break;
      out.push_back({kind_of(got[at]), got.substr(at + 5, len)});
      at += 5 + len;
    }
    if ((int64_t)out.size() < n) {  // the child ended inside the next case
      const bool alarm_hit = WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM;
      out.push_back({alarm_hit ? ChildResult::timed_out : ChildResult::crashed, died(status)});
    }
  }
  return out;
}

ChildResult run_in_child(const std::function<void()>& f, unsigned seconds) {
  return run_cases_in_children(1, [&](int64_t) { f(); }, seconds)[0];
}

static pid_t spawn(const std::vector<std::string>& argv, int out_fd, unsigned seconds) {
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    child_setup(seconds);  // the alarm survives exec
    setpgid(0, 0);         // its own process group: a test can kill it with everything it started
    const int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

ProcessResult run_program(const std::vector<std::string>& argv, unsigned seconds) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = spawn(argv, fds[1], seconds);
  close(fds[1]);
  ProcessResult r;
  r.output = read_all(fds[0]);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  else r.exit_code = WEXITSTATUS(status);
  return r;
}

int start_program(const std::vector<std::string>& argv, const std::string& log) {
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + log);
  const pid_t pid = spawn(argv, fd, 600);
  close(fd);
  return (int)pid;
}

std::string sibling_binary(const std::string& name) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
  std::string self(buf, (size_t)n);
  return self.substr(0, self.find_last_of('/') + 1) + name;
}

std::string make_temp_dir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

}  // namespace testutil
