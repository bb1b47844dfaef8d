// Child processes without a shell: gnuplot for every plot, `pd decompose` children of
// `pd sweep`, and the headless browser of the report test.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace pd {

// Starts argv (argv[0] looked up in PATH) with stdin from /dev/null, stdout into out_path and
// stderr into err_path (empty: into out_path as well), both truncated, and this process's
// environment plus extra_env ("NAME=value", replacing a variable of that name). Returns 0 and
// sets *pid, or the errno of the failure (e.g. ENOENT: no such program).
int spawn_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
                  const std::vector<std::string>& extra_env, pid_t* pid);

// waitpid that retries on EINTR; 0 and *status on success, else errno.
int wait_process(pid_t pid, int* status);

// spawn_process then wait_process: 0 and the waitpid *status, or the errno of the failure.
int run_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
                const std::vector<std::string>& extra_env, int* status);

}  // namespace pd
