// Running test code where a crash or a hang cannot take the test binary down: a function in a
// forked child, or a program (build/pd) as a subprocess, each under a time limit (an alarm, so
// a hang is caught however slow the machine; no test asserts on how long anything takes).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace testutil {

struct ChildResult {
  enum Kind { returned, error, other_exception, crashed, timed_out } kind;
  // returned: empty; error: the ad::Error message; other_exception: its what(); crashed /
  // timed_out: how the child died (a sanitizer report goes to stderr and ends as crashed).
  std::string message;
  bool failed() const { return kind == other_exception || kind == crashed || kind == timed_out; }
};

// Runs f in a forked child (one engine thread) for at most `seconds`.
ChildResult run_in_child(const std::function<void()>& f, unsigned seconds = 5);

// Runs f(0), ..., f(n - 1) in forked children, many per child (a fork per case costs more than
// most cases), each case under its own `seconds` limit. A case that crashes or hangs ends its
// child; the next case starts in a new one. Returns one result per case.
std::vector<ChildResult> run_cases_in_children(int64_t n, const std::function<void(int64_t)>& f, unsigned seconds);

struct ProcessResult {
  int exit_code = -1;   // -1 when killed by a signal
  int signal = 0;       // the signal that ended it (SIGALRM: over its time limit)
  std::string output;   // stdout and stderr together
};

// Runs argv[0] with argv (no shell) for at most `seconds`; stdin is /dev/null.
ProcessResult run_program(const std::vector<std::string>& argv, unsigned seconds);

// Starts argv[0] (output to `log`) and returns its pid; the caller waits or kills it.
int start_program(const std::vector<std::string>& argv, const std::string& log);

// A program built next to this test binary ("pd" -> build/pd, or build-san/pd).
std::string sibling_binary(const std::string& name);

// A fresh folder under /tmp ("/tmp/<prefix>XXXXXX").
std::string make_temp_dir(const std::string& prefix);

}  // namespace testutil
