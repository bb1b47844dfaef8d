// pd::plot_png and pd::gnuplot_quote: awkward paths reach gnuplot intact, and a missing or
// failing gnuplot leaves a warning naming the file and no new (0-byte or partial) PNG.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>

#include "autodiff/fileio.hpp"
#include "experiments/plot.hpp"
#include "tests/cli_test_util.hpp"

namespace fs = std::filesystem;

namespace {

// A fresh directory whose name holds a space, both quote kinds, a backslash, '$' and '@'
// (shell and gnuplot specials), removed at scope exit.
struct AwkwardDir {
  fs::path root, path;
  AwkwardDir() {
    char tmpl[] = "/tmp/pd_plot_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    root = tmpl;
    path = root / "it's a \"plot\" \\ $HOME @x";
    fs::create_directory(path);
  }
  ~AwkwardDir() { fs::remove_all(root); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::set<std::string> names() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.insert(e.path().filename().string());
    return out;
  }
};

// What `fn` writes to stderr (fd 2, so it also catches child processes').
std::string capture_stderr(const std::function<void()>& fn) { return capture_output(2, fn); }

bool have_gnuplot() { return std::system("gnuplot -e 'exit' >/dev/null 2>&1") == 0; }

const char* kTerminal = "pngcairo size 200,150";

}  // namespace

TEST_CASE("plot: gnuplot_quote escapes quotes, backslashes and newlines only") {
  CHECK(pd::gnuplot_quote("runs/a.png") == "\"runs/a.png\"");
  CHECK(pd::gnuplot_quote("it's") == "\"it's\"");
  CHECK(pd::gnuplot_quote("a \"b\"") == "\"a \\\"b\\\"\"");
  CHECK(pd::gnuplot_quote("c:\\d") == "\"c:\\\\d\"");
  CHECK(pd::gnuplot_quote("x\ny") == "\"x\\ny\"");
  CHECK(pd::gnuplot_quote("$HOME @x") == "\"$HOME @x\"");
}

TEST_CASE("plot: paths with spaces and quotes reach gnuplot intact") {
  if (!have_gnuplot()) {
    MESSAGE("gnuplot not installed: skipped");
    return;
  }
  AwkwardDir d;
  const std::string dat = d.file("data.dat"), gp = d.file("p.gp"), png = d.file("p.png");
  ad::write_file_atomic(dat, "1 1\n2 4\n3 9\n");
  const bool ok = pd::plot_png(gp, png, kTerminal, "plot " + pd::gnuplot_quote(dat) + " using 1:2 with lines title " +
                                                       pd::gnuplot_quote("it's \"y\""));
  CHECK(ok);
  // Only the data, the script and the image: no temporary script, log or image left behind.
  CHECK(d.names() == std::set<std::string>{"data.dat", "p.gp", "p.png"});
  const std::string img = ad::read_file(png);
  REQUIRE(img.size() > 8);
  CHECK(img.substr(1, 3) == "PNG");
  // The kept script names the final image, so `gnuplot p.gp` re-renders it.
  CHECK(ad::read_file(gp).find("set output " + pd::gnuplot_quote(png) + "\n") != std::string::npos);
}

TEST_CASE("plot: a failing gnuplot leaves no partial PNG and keeps an older one") {
  if (!have_gnuplot()) {
    MESSAGE("gnuplot not installed: skipped");
    return;
  }
  AwkwardDir d;
  const std::string gp = d.file("p.gp"), png = d.file("p.png");
  // gnuplot draws the plot (opening the output), then fails on the next line.
  bool ok = true;
  std::string err = capture_stderr([&] { ok = pd::plot_png(gp, png, kTerminal, "plot sin(x)\nno_such_command\n"); });
  CHECK_FALSE(ok);
  CHECK(d.names() == std::set<std::string>{"p.gp"});
  CHECK(err.find("warning:") != std::string::npos);
  CHECK(err.find(png) != std::string::npos);
  CHECK(err.find("no_such_command") != std::string::npos);  // gnuplot's own message is passed on
  // An image from an earlier run stays as it was.
  ad::write_file_atomic(png, "older image");
  capture_stderr([&] { ok = pd::plot_png(gp, png, kTerminal, "plot sin(x)\nno_such_command\n"); });
  CHECK_FALSE(ok);
  CHECK(ad::read_file(png) == "older image");
  CHECK(d.names() == std::set<std::string>{"p.gp", "p.png"});
}

TEST_CASE("plot: missing gnuplot, or one that writes nothing, is a warning naming the PNG") {
  AwkwardDir d;
  const std::string gp = d.file("p.gp"), png = d.file("p.png");
  bool ok = true;
  std::string err = capture_stderr([&] {
    ok = pd::plot_png(gp, png, kTerminal, "plot sin(x)\n", "/nonexistent/pd-no-gnuplot");
  });
  CHECK_FALSE(ok);
  CHECK(err.find("cannot run /nonexistent/pd-no-gnuplot") != std::string::npos);
  CHECK(err.find(png) != std::string::npos);
  CHECK(d.names() == std::set<std::string>{"p.gp"});  // the script is kept for a later run
  // `true` exits 0 without drawing: no 0-byte PNG either.
  err = capture_stderr([&] { ok = pd::plot_png(gp, png, kTerminal, "plot sin(x)\n", "true"); });
  CHECK_FALSE(ok);
  CHECK(err.find("wrote no image") != std::string::npos);
  CHECK(d.names() == std::set<std::string>{"p.gp"});
}
