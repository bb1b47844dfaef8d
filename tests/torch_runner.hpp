// Runs a float64 PyTorch reference script of tests/torch/ on a JSON input and reads its JSON
// output, for the cross-check tests. The script is called as `python3 SCRIPT IN.json OUT.json`
// in a fresh temp dir; exit code 77 means PyTorch is missing. Without python3, torch or the
// script (tests not run from the repository root) the result is `skipped` with a reason.
#pragma once
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "autodiff/error.hpp"
#include "autodiff/tensor.hpp"

namespace torch_ref {

struct Result {
  bool skipped = false;
  std::string reason;   // why skipped, or the script's log when it failed
  int exit_code = 0;
  nlohmann::json out;
};

inline Result run(const std::string& script, const nlohmann::json& in) {
  Result r;
  if (access(script.c_str(), R_OK) != 0) {
    r.skipped = true, r.reason = script + " not found (run the tests from the repository root)";
    return r;
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "pd_torch_xcheck_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) ad::fail("mkdtemp failed for " + tmpl);
  const std::string dir = tmpl, in_path = dir + "/in.json", out_path = dir + "/out.json", log = dir + "/log.txt";
  std::ofstream(in_path) << in.dump();
  const char* py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  const std::string cmd = std::string(py) + " " + script + " " + in_path + " " + out_path + " > " + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::stringstream log_text;
  log_text << std::ifstream(log).rdbuf();
  if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) == 127) {
    r.skipped = true, r.reason = "could not run python3 (" + cmd + ")";
  } else if (WEXITSTATUS(rc) == 77) {
    r.skipped = true, r.reason = "PyTorch is not installed (apt-get install python3-torch)";
  } else {
    r.exit_code = WEXITSTATUS(rc);
    r.reason = cmd + "\n" + log_text.str();
    if (r.exit_code == 0) std::ifstream(out_path) >> r.out;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return r;
}

// A tensor for the scripts: {"shape": [...], "data": [... row-major]} (doubles print round-trip).
inline nlohmann::json tensor_json(const ad::Tensor& t) {
  return {{"shape", t.shape().to_vector()}, {"data", t.to_vector()}};
}

// max_i |got_i - want_i| / max_i |want_i| (the error relative to the tensor's scale, so entries
// near 0 of a tensor with large ones are not held to a relative bound they cannot meet);
// infinity when the shapes differ.
inline double max_rel_err(const ad::Tensor& got, const nlohmann::json& want) {
  if (want["shape"].get<std::vector<int64_t>>() != got.shape().to_vector()) return INFINITY;
  const std::vector<double> w = want["data"].get<std::vector<double>>();
  double scale = 1e-300, err = 0;
  for (double v : w) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < w.size(); ++i) err = std::max(err, std::abs(got.item((int64_t)i) - w[i]) / scale);
  return err;
}

}  // namespace torch_ref
