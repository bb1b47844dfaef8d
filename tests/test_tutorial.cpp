// The tutorial's text stays true: every program in experiments/tutorial/ runs, and the numbers
// docs/tutorial.md quotes from its output are what it prints now.
//
// docs/tutorial.md quotes each program's output in a block that starts with the line
// "$ build/tutorial/<program>". The table below names, per program, the printed numbers that
// are checked: a pattern (literal text; a run of spaces matches any run of white space; %N is
// the number checked, %_ a number skipped) and a tolerance |printed - quoted| <= abs + rel |quoted|.
// Each pattern must match both the program's output and the doc's quoted block. Code quoted in
// the doc as `NN_name.cpp: <code>` must appear in that program's source.
//
// Adding a chapter: its program experiments/tutorial/NN_name.cpp (the Makefile builds every file
// there), its rows in kQuoted, and its chapter in docs/tutorial.md.
//
// The programs are found in $PD_TUTORIAL_DIR (set by `make test` and `make sanitize`), else
// build/tutorial. The sanitizer build (-O1: no FMA contraction) rounds float32 differently from
// the release build, and the difference grows over a few hundred training steps: that is why
// values after training are checked loosely and values before training tightly.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Quoted {
  const char* program;
  const char* pattern;
  double abs, rel;
};

// clang-format off
const Quoted kQuoted[] = {
    {"01_autodiff", "dL/da = %N  dL/db", 0, 0},
    {"01_autodiff", "dL/db = %N", 0, 0},
    {"01_autodiff", "dL/dc = %N", 0, 0},
    {"01_autodiff", "after a second backward: dL/da = %N", 0, 0},
    {"01_autodiff", "after zero_grad and backward: dL/da = %N", 0, 0},
    {"01_autodiff", "layer loss = %N", 0, 1e-6},
    {"01_autodiff", "backward = %N", 0, 1e-6},
    {"01_autodiff", "finite difference = %N", 0, 1e-6},
    {"01_autodiff", "ok, %N coordinates", 0, 0},

    {"02_superposition", "eval loss %N", 0, 0.02},
    {"02_superposition", "min %N deg", 0.5, 0},
    {"02_superposition", "max %N deg", 0.5, 0},
    {"02_superposition", "dimensionality D_i: %N", 0.01, 0},
    {"02_superposition", "0.00 1.0 %_ %N", 0, 0.01},         // ||W||_F^2, dense: m = 5
    {"02_superposition", "0.00 1.0 %_ %_ %N", 0, 0},         // represented, dense
    {"02_superposition", "0.99 100.0 %_ %N", 0, 0.05},       // ||W||_F^2, sparsest
    {"02_superposition", "0.99 100.0 %_ %_ %N", 1, 0},       // represented, sparsest
    {"02_superposition", "of 1/2: %N", 3, 0},

    {"03_spd", "faithfulness at init = %N", 0, 1e-4},
    {"03_spd", "over the batch = %N", 0, 1e-3},
    {"03_spd", "importance_minimality coeff 0.003 value %N", 0, 1e-3},
    {"03_spd", "stochastic_recon coeff 1 value %N", 0, 1e-3},
    {"03_spd", "stochastic_recon_layerwise coeff 1 value %N", 0, 1e-3},
    {"03_spd", "step 500 total %N", 0, 0.1},
    {"03_spd", "linear1: identity-CI error %N", 0, 0},
    {"03_spd", "linear2: identity-CI error %N", 0, 0},
    {"03_spd", "linear1 20 %N", 0, 0},                       // alive components
    {"03_spd", "linear1 20 %_ %_ %_ %_ - %N", 0.001, 0},     // MMCS
    {"03_spd", "linear1 20 %_ %_ %_ %_ - %_ %N", 0.01, 0},   // ML2R

    {"04_apd", "faithfulness at init = %N", 0, 1e-4},
    {"04_apd", "K = floor(0.211 * 1024) = %N", 0, 0},
    {"04_apd", "faithfulness coeff 1 value %N", 0, 1e-4},
    {"04_apd", "minimality coeff 1 value %N", 0, 1e-3},
    {"04_apd", "simplicity coeff 0.7 value %N", 0, 1e-3},
    {"04_apd", "step 500 total %N", 0, 0.1},
    {"04_apd", "linear1 5 %_ %_ %_ %_ - %N", 0.03, 0},       // MMCS
    {"04_apd", "linear1 5 %_ %_ %_ %_ - %_ %N", 0.1, 0},     // ML2R

    {"05_vpd", "global CI function: %N tensors", 0, 0},
    {"05_vpd", "ascent step 0: D(f(x | m), f(x)) = %N", 0, 1e-3},
    {"05_vpd", "ascent step 20: D = %N", 0, 0.02},
    {"05_vpd", "persistent_pgd_recon coeff 1 value %N", 0, 1e-3},
    {"05_vpd", "step 500 total %N", 0, 0.1},
    {"05_vpd", "linear1 20 %N", 1, 0},                       // alive components (5)
    {"05_vpd", "linear1 20 %_ %_ %_ %_ - %N", 0.01, 0},      // MMCS

    {"06_circuits", "layer 3: on = %_ x = (%N", 1e-4, 0},
    {"06_circuits", "noisy on 0.2 -> on' = %N", 0, 0},
    {"06_circuits", "noisy on 0.9 -> on' = %N", 1e-9, 0},
    {"06_circuits", "delta = %N", 0, 1e-6},
    {"06_circuits", "kappa = %N", 0, 1e-3},
    {"06_circuits", "layer 2: active MSE_x %N", 0, 0.03},
    {"06_circuits", "layer 4: active MSE_x %N", 0, 0.03},
    {"06_circuits", "layer 4: active MSE_x %_ (pred %N", 0, 1e-3},
    {"06_circuits", "layer 4: active MSE_x %_ (pred %_) inactive MSE_x %N", 0, 0.03},
    {"06_circuits", "T=125 load 0.0020, layer 4: active %_ (pred %_, ratio %N", 0.05, 0},
    {"06_circuits", "T=750 load 0.0120, layer 4: active %_ (pred %_, ratio %N", 0.1, 0},
    {"06_circuits", "T=750 load 0.0120, layer 4: active %_ (pred %_, ratio %_), inactive ratio %N", 0, 0.1},
    {"06_circuits", "layer 4 active MSE_x %N", 0, 0.05},
};
// clang-format on

const char* kNumber = R"([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)";

std::regex pattern_regex(const std::string& p) {
  std::string re;
  for (size_t i = 0; i < p.size(); ++i) {
    const char ch = p[i];
    if (ch == '%' && i + 1 < p.size() && (p[i + 1] == 'N' || p[i + 1] == '_')) {
      re += p[i + 1] == 'N' ? "(" + std::string(kNumber) + ")" : std::string(kNumber);
      ++i;
    } else if (ch == ' ') {
      while (i + 1 < p.size() && p[i + 1] == ' ') ++i;
      re += R"(\s+)";
    } else if (std::string(R"(\^$.|?*+()[]{}/)").find(ch) != std::string::npos) {
      re += std::string("\\") + ch;
    } else {
      re += ch;
    }
  }
  return std::regex(re);
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The quoted output block of `program` in the doc ("" when missing).
std::string quoted_block(const std::string& doc, const std::string& program) {
  const std::string head = "$ build/tutorial/" + program + "\n";
  const size_t at = doc.find(head);
  if (at == std::string::npos) return "";
  const size_t end = doc.find("```", at);
  return doc.substr(at + head.size(), end == std::string::npos ? std::string::npos : end - at - head.size());
}

bool find_number(const std::string& text, const std::regex& re, double& value) {
  std::smatch m;
  if (!std::regex_search(text, m, re)) return false;
  value = std::stod(m[1].str());
  return true;
}

}  // namespace

TEST_CASE("tutorial: every program runs and prints the numbers docs/tutorial.md quotes") {
  const char* env = std::getenv("PD_TUTORIAL_DIR");
  const std::string bin_dir = env && *env ? env : "build/tutorial";
  const std::string doc = read_text("docs/tutorial.md");
  REQUIRE_MESSAGE(!doc.empty(), "docs/tutorial.md not found (run the tests from the repository root)");

  std::set<std::string> programs;
  for (const auto& e : std::filesystem::directory_iterator("experiments/tutorial"))
    if (e.path().extension() == ".cpp") programs.insert(e.path().stem().string());
  REQUIRE(!programs.empty());
  std::map<std::string, int> rows;
  for (const Quoted& q : kQuoted) rows[q.program]++;
  for (const auto& [name, n] : rows)
    CHECK_MESSAGE(programs.count(name), "kQuoted names " << name << ", which is not in experiments/tutorial/");

  for (const std::string& p : programs) {
    CAPTURE(p);
    CHECK_MESSAGE(rows[p] > 0, "no row of kQuoted checks " << p);
    const std::string block = quoted_block(doc, p);
    CHECK_MESSAGE(!block.empty(), "docs/tutorial.md quotes no output of " << p << " (a block starting '$ build/tutorial/" << p << "')");

    const std::string exe = bin_dir + "/" + p;
    REQUIRE_MESSAGE(std::filesystem::exists(exe), exe << " is missing: build it with `make tutorial`");
    FILE* pipe = popen((exe + " 2>&1").c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string out;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    const int status = pclose(pipe);
    REQUIRE_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), p << " failed:\n" << out);

    for (const Quoted& q : kQuoted) {
      if (q.program != p) continue;
      CAPTURE(q.pattern);
      const std::regex re = pattern_regex(q.pattern);
      double printed = 0, quoted = 0;
      const bool in_out = find_number(out, re, printed), in_doc = find_number(block, re, quoted);
      CHECK_MESSAGE(in_out, p << " no longer prints '" << q.pattern << "':\n" << out);
      CHECK_MESSAGE(in_doc, "docs/tutorial.md's output of " << p << " has no '" << q.pattern << "'");
      if (in_out && in_doc)
        CHECK_MESSAGE(std::fabs(printed - quoted) <= q.abs + q.rel * std::fabs(quoted),
                      p << " prints " << printed << " for '" << q.pattern << "', docs/tutorial.md quotes " << quoted
                        << " (tolerance " << q.abs << " + " << q.rel << " relative)");
    }
  }

  // Code the doc points at (`NN_name.cpp: code`) is in that program.
  const std::regex code_ref(R"(`(\d\d_[A-Za-z0-9_]+)\.cpp: ([^`]+)`)");
  int refs = 0;
  for (std::sregex_iterator it(doc.begin(), doc.end(), code_ref), end; it != end; ++it, ++refs) {
    const std::string prog = (*it)[1].str(), code = (*it)[2].str();
    const std::string src = read_text("experiments/tutorial/" + prog + ".cpp");
    CHECK_MESSAGE(src.find(code) != std::string::npos,
                  "docs/tutorial.md points at `" << code << "` in " << prog << ".cpp, which is not there");
  }
  CHECK(refs > 0);
}

TEST_CASE("tutorial: the quoted-number patterns match what they should") {
  double v = 0;
  CHECK(find_number("  stochastic_recon     coeff 1      value 1.1375e-02\n", pattern_regex("stochastic_recon coeff 1 value %N"), v));
  CHECK(v == 1.1375e-02);
  CHECK(!find_number("  stochastic_recon_layerwise coeff 1 value 6.9e-03\n", pattern_regex("stochastic_recon coeff 1 value %N"), v));
  CHECK(find_number("linear1   20   5   5   0.197   0   -   0.9999   0.9973", pattern_regex("linear1 20 %_ %_ %_ %_ - %_ %N"), v));
  CHECK(v == 0.9973);
  CHECK(find_number("K = floor(0.211 * 1024) = 216 of", pattern_regex("K = floor(0.211 * 1024) = %N"), v));
  CHECK(v == 216);
  CHECK(!find_number("K = floor(0.2112 * 1024) = 216", pattern_regex("K = floor(0.211 * 1024) = %N"), v));
}
