#include "experiments/plot.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "experiments/process.hpp"

namespace pd {

std::string gnuplot_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// gnuplot's own messages, indented, for a warning (empty when it printed nothing).
static std::string read_log(const std::string& log) {
  std::string text;
  try {
    text = ad::read_file(log);
  } catch (const ad::Error&) {
    return "";
  }
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out += "  gnuplot: " + text.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

bool plot_png(const std::string& script_path, const std::string& png, const std::string& terminal,
              const std::string& body, const std::string& program) {
  auto script_for = [&](const std::string& out) {
    return "set terminal " + terminal + "\nset output " + gnuplot_quote(out) + "\n" + body;
  };
  ad::write_file_atomic(script_path, script_for(png));
  // gnuplot renders into tmp_png through a copy of the script that names it; tmp_png replaces
  // png only once it is complete.
  const std::string tmp_png = ad::temp_path_for(png), run_script = ad::temp_path_for(script_path),
                    log = ad::temp_path_for(script_path);
  ad::write_file_atomic(run_script, script_for(tmp_png));
  int status = 0;
  const int err = run_process({program, run_script}, log, "", {}, &status);
  const std::string messages = err == 0 ? read_log(log) : "";
  ::unlink(run_script.c_str());
  ::unlink(log.c_str());
  std::string problem;
  struct stat st;
  if (err != 0)
    problem = "cannot run " + program + " (" + std::strerror(err) + ")";
  else if (WIFSIGNALED(status))
    problem = program + " killed by signal " + std::to_string(WTERMSIG(status)) + " on " + script_path;
  else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    problem = program + " failed (exit status " + std::to_string(WEXITSTATUS(status)) + ") on " + script_path;
  else if (::stat(tmp_png.c_str(), &st) != 0 || st.st_size == 0)
    problem = program + " wrote no image from " + script_path;
  else if (::rename(tmp_png.c_str(), png.c_str()) != 0)
    problem = "cannot rename " + tmp_png + " to " + png + " (" + std::strerror(errno) + ")";
  if (problem.empty()) return true;
  ::unlink(tmp_png.c_str());
  std::fprintf(stderr, "warning: %s; %s not written (script %s kept)\n%s", problem.c_str(), png.c_str(),
               script_path.c_str(), messages.c_str());
  return false;
}

}  // namespace pd
