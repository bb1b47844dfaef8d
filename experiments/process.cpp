#include "experiments/process.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace pd {

int spawn_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
                  const std::vector<std::string>& extra_env, pid_t* pid) {
  if (argv.empty()) return EINVAL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (err_path.empty()) posix_spawn_file_actions_adddup2(&fa, 1, 2);
  else posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args = argv, env;
  for (char** e = environ; *e; ++e) {
    const std::string var = *e;
    bool replaced = false;
    for (const std::string& x : extra_env) {
      const size_t eq = x.find('=');
      replaced = replaced || (eq != std::string::npos && var.compare(0, eq + 1, x, 0, eq + 1) == 0);
    }
    if (!replaced) env.push_back(var);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> a, e;
  for (std::string& s : args) a.push_back(s.data());
  for (std::string& s : env) e.push_back(s.data());
  a.push_back(nullptr), e.push_back(nullptr);
  const int err = posix_spawnp(pid, args[0].c_str(), &fa, nullptr, a.data(), e.data());
  posix_spawn_file_actions_destroy(&fa);
  return err;
}

int wait_process(pid_t pid, int* status) {
  while (waitpid(pid, status, 0) < 0)
    if (errno != EINTR) return errno;
  return 0;
}

int run_process(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
                const std::vector<std::string>& extra_env, int* status) {
  pid_t pid = 0;
  const int err = spawn_process(argv, out_path, err_path, extra_env, &pid);
  return err != 0 ? err : wait_process(pid, status);
}

}  // namespace pd
