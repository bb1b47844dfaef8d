// Headless Chromium for the report tests: find Debian's chromium and render a page, collecting
// the DOM after scripts ran and every console message or uncaught error.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "experiments/process.hpp"

// Debian's chromium in PATH, or "".
inline std::string find_chromium() {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  for (std::string d; std::getline(ss, d, ':');)
    if (!d.empty() && access((d + "/chromium").c_str(), X_OK) == 0) return d + "/chromium";
  return "";
}

struct Rendered {
  int exit_code = -1;
  std::string dom;
  std::vector<std::string> console;  // every console message and uncaught error the page logged
};

// `chromium --headless --dump-dom file://page` with its log on stderr (console messages appear
// there as "...:CONSOLE..." lines, uncaught exceptions as "Uncaught ...").
inline Rendered render(const std::string& chromium, const std::string& page, const std::string& work) {
  Rendered r;
  const std::string abs = std::filesystem::absolute(page).string();
  int status = 0;
  const int err = pd::run_process({chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                                   "--user-data-dir=" + work + "/profile", "--enable-logging=stderr", "--v=0",
                                   "--dump-dom", "file://" + abs},
                                  work + "/dom.html", work + "/browser.log", {}, &status);
  REQUIRE(err == 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.dom = ad::read_file(work + "/dom.html");
  std::stringstream log(ad::read_file(work + "/browser.log"));
  for (std::string line; std::getline(log, line);)
    if (line.find(":CONSOLE") != std::string::npos || line.find("Uncaught") != std::string::npos)
      r.console.push_back(line);
  return r;
}
