// report.html, pd report (--compare) and pd sweep: the pages hold what they promise (result
// table, every heatmap, component tables, a language model's top-activating contexts), render in a headless browser without console
// errors, are rebuilt byte for byte from the run folder, and an interrupted sweep resumes to
// the same summary as an uninterrupted one.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "experiments/html.hpp"
#include "experiments/process.hpp"
#include "experiments/report_html.hpp"
#include "experiments/sweep.hpp"
#include "tests/browser_util.hpp"
#include "tests/cli_test_util.hpp"

using nlohmann::json;

static size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// The HTML of the element `<tag ... id="id"` up to its closing tag (tables do not nest here).
static std::string element(const std::string& page, const std::string& tag, const std::string& id) {
  const size_t a = page.find("<" + tag + " class=\"sortable\" id=\"" + id + "\"");
  if (a == std::string::npos) return "";
  const size_t b = page.find("</" + tag + ">", a);
  return b == std::string::npos ? "" : page.substr(a, b - a);
}

static std::string tiny_run(const std::string& dir) {
  write_tiny_tms_configs(dir);
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/run", "--quiet"}) == 0);
  return dir + "/run";
}

TEST_CASE("html: escaping, base64, capped sortable tables") {
  CHECK(pd::html::escape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  CHECK(pd::html::base64("Man") == "TWFu");
  CHECK(pd::html::base64("Ma") == "TWE=");
  CHECK(pd::html::base64("M") == "TQ==");
  CHECK(pd::html::base64("") == "");
  std::vector<std::vector<pd::html::Cell>> rows;
  for (int i = 0; i < 60; ++i) rows.push_back({pd::html::num(i), pd::html::text("<" + std::to_string(i) + ">")});
  const std::string t = pd::html::table("t", {"i", "name"}, rows, 50);
  CHECK(count_of(t, "<tr class=\"capped\">") == 10);
  CHECK(t.find("show all 60") != std::string::npos);
  CHECK(t.find("&lt;59&gt;") != std::string::npos);
  CHECK(t.find("<59>") == std::string::npos);
}

TEST_CASE("report.html: written by pd decompose with table, heatmaps, components; pd report rebuilds it") {
  const ScopedTmpDir tmp;
  const std::string run = tiny_run(tmp.path);
  const std::string page = ad::read_file(run + "/report.html");
  const std::string result = element(page, "table", "result-table");
  CHECK(count_of(result, "<tr>") == 3);  // header, linear1, linear2
  CHECK(result.find(">linear1</td>") != std::string::npos);
  CHECK(count_of(page, "<img class=\"heatmap\" alt=\"linear") == 2);
  CHECK(count_of(page, "src=\"data:image/png;base64,iVBORw0KGgo") == 3);  // two heatmaps + TMS directions
  CHECK(page.find("<img class=\"tms\"") != std::string::npos);
  for (const char* id : {"components-0", "components-1"}) {
    const std::string t = element(page, "table", id);
    CHECK(count_of(t, "<tr") == 9);  // header + C = 8 components
  }
  CHECK(page.find("<svg class=\"chart\"") != std::string::npos);
  CHECK(page.find("id=\"config\"") != std::string::npos);
  CHECK(page.find("src=\"http") == std::string::npos);  // nothing from the network
  CHECK(page.find("<link") == std::string::npos);
  const json comp = json::parse(ad::read_file(run + "/components.json"));
  CHECK(comp["layers"].size() == 2);
  CHECK(comp["layers"][0]["norm"].size() == 8);
  CHECK(comp["layers"][0]["serves_features"].size() == 8);
  REQUIRE(comp["layers"][1]["ablation_effect"].size() == 8);
  CHECK(comp["layers"][1]["ablation_effect"][0].is_number());  // measured for the components with norm
  CHECK(comp["ablation_batch"] == 1000);

  std::filesystem::remove(run + "/report.html");
  REQUIRE(run_pd({"report", run}) == 0);
  CHECK(ad::read_file(run + "/report.html") == page);  // made from the folder's files alone

  // Bad input names the folder or the file.
  CHECK_THROWS_WITH_AS(pd::write_report(run + "/nope"), doctest::Contains((run + "/nope").c_str()), ad::Error);
  const std::string components = ad::read_file(run + "/components.json");
  json broken = json::parse(components);
  broken["layers"][1]["onehot_max_ci"] = json::array();  // shorter than C
  ad::write_file_atomic(run + "/components.json", broken.dump());
  CHECK_THROWS_WITH_AS(pd::write_report(run), doctest::Contains((run + "/components.json: layers[1]: malformed").c_str()),
                       ad::Error);
  broken["layers"][0].erase("norm");
  ad::write_file_atomic(run + "/components.json", broken.dump());
  CHECK_THROWS_WITH_AS(pd::write_report(run), doctest::Contains("layers[0].norm: missing"), ad::Error);
  ad::write_file_atomic(run + "/metrics.json", "{\"layers\": ");
  CHECK_THROWS_WITH_AS(pd::write_report(run), doctest::Contains((run + "/metrics.json").c_str()), ad::Error);
  ad::write_file_atomic(run + "/metrics.json", "{\"layers\": {}}");
  CHECK_THROWS_WITH_AS(pd::write_report(run), doctest::Contains("target: missing"), ad::Error);
  CHECK(run_pd({"report", run}) == 1);
}

TEST_CASE("report.html of pd train: metrics and the training curve") {
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  write_tiny_tms_configs(dir);
  REQUIRE(run_pd({"train", dir + "/tms.json", "--out", dir + "/t", "--quiet"}) == 0);
  const std::string page = ad::read_file(dir + "/t/report.html");
  CHECK(element(page, "table", "metrics-table").find("eval_loss") != std::string::npos);
  CHECK(page.find("<polyline") != std::string::npos);
}

TEST_CASE("pd report --compare: one page and one CSV, config differences highlighted") {
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  json spd = write_tiny_tms_configs(dir);
  spd["C"] = 6;
  ad::write_file_atomic(dir + "/spd6.json", spd.dump());
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/a", "--quiet"}) == 0);
  REQUIRE(run_pd({"decompose", dir + "/spd6.json", "--out", dir + "/b", "--quiet", "--seed", "4"}) == 0);
  REQUIRE(run_pd({"report", "--compare", dir + "/a", dir + "/b", "--out", dir + "/cmp"}) == 0);
  const std::string csv = ad::read_file(dir + "/cmp/compare.csv");
  CHECK(count_of(csv, "\n") == 3);
  CHECK(csv.rfind("run,target,method,seed,C,", 0) == 0);  // C differs; seed has its own column
  CHECK(csv.find("\na,tms,spd,1,8,") != std::string::npos);
  CHECK(csv.find("\nb,tms,spd,4,6,") != std::string::npos);
  const std::string page = ad::read_file(dir + "/cmp/compare.html");
  CHECK(page.find("<td class=\"diff\" data-v=\"6\">6</td>") != std::string::npos);
  CHECK(count_of(page, "<svg class=\"chart\"") >= 2);  // a chart per loss term, both runs on it
  CHECK(run_pd({"report", "--compare", dir + "/a", dir + "/missing", "--out", dir + "/cmp"}) == 1);
  CHECK(run_pd({"report", "--compare", dir + "/a"}) == 2);  // no --out
}

TEST_CASE("report.html renders in headless Chromium: no console errors; table, heatmaps, components, contexts in the DOM") {
  const std::string chromium = find_chromium();
  if (chromium.empty()) {
    const bool required = getuid() == 0 || std::getenv("PD_REQUIRE_BROWSER");
    MESSAGE("\n*** NOT RUN: the headless-browser test of report.html needs Debian's chromium ***\n"
            "*** install it with: sudo scripts/deps.sh --browser                          ***");
    if (required) FAIL("chromium is missing although this is root (or PD_REQUIRE_BROWSER is set): scripts/deps.sh --browser installs it");
    return;
  }
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  const std::string run = tiny_run(dir);

  // The check can fail: a page with a script error and a console message is caught.
  ad::write_file_atomic(dir + "/bad.html", pd::html::page("bad", "<script>console.error('boom'); undefinedFn();</script>"));
  const Rendered bad = render(chromium, dir + "/bad.html", dir);
  CHECK(bad.console.size() == 2);

  const Rendered r = render(chromium, run + "/report.html", dir);
  CHECK(r.exit_code == 0);
  const std::string first = r.console.empty() ? std::string() : r.console[0];
  CHECK_MESSAGE(r.console.empty(), first);
  const std::string result = element(r.dom, "table", "result-table");
  CHECK(count_of(result, ">linear1</td>") == 1);
  CHECK(count_of(result, ">linear2</td>") == 1);
  CHECK(count_of(result, "<td") == 2 * 9);
  for (const char* layer : {"linear1", "linear2"}) {
    const size_t at = r.dom.find(std::string("<img class=\"heatmap\" alt=\"") + layer + "\" src=\"data:image/png;base64,");
    REQUIRE(at != std::string::npos);
    CHECK(r.dom.find('"', r.dom.find("src=\"", at) + 5) - at > 2000);  // a real image, not an empty URI
  }
  for (const char* id : {"components-0", "components-1"}) {
    const std::string t = element(r.dom, "table", id);
    CHECK(count_of(t, "<tr") == 9);
    CHECK(count_of(t, "<td") == 8 * 8);
  }

  // A language model's page: per layer a table of top-activating contexts, the token marked.
  const std::string lm = tiny_lm_run(dir, "builtin:stories:40", "lm");
  const Rendered p = render(chromium, lm + "/report.html", dir);
  CHECK(p.exit_code == 0);
  CHECK_MESSAGE(p.console.empty(), (p.console.empty() ? std::string() : p.console[0]));
  for (const char* id : {"contexts-0", "contexts-1"}) {
    const std::string t = element(p.dom, "table", id);
    CHECK(count_of(t, "<tr") >= 2);
    CHECK(count_of(t, "<mark>") >= count_of(t, "<tr") - 1);  // every component row marks its tokens
  }
  // its masking-strategy table (seven strategies) and the four failure-mode detectors
  CHECK(count_of(element(p.dom, "table", "lm-table"), "<tr") == 8);
  CHECK(count_of(element(p.dom, "table", "failure-table"), "<tr") == 5);
}

TEST_CASE("the page script in headless Chromium: a header click sorts numerically, the cap follows, show all lifts it") {
  const std::string chromium = find_chromium();
  if (chromium.empty()) return;  // said loudly (or failed, as root) by the test above
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  std::vector<std::vector<pd::html::Cell>> rows;
  for (int i = 0; i < 60; ++i) rows.push_back({pd::html::num((i * 37) % 60), pd::html::text("r" + std::to_string(i))});
  const std::string body = pd::html::table("a", {"v", "name"}, rows, 50) + pd::html::table("b", {"v", "name"}, rows, 50) +
                           "<script>window.addEventListener('load', function() {"
                           "pdSort(document.querySelector('#a th')); pdSort(document.querySelector('#b th'));"
                           "pdSort(document.querySelector('#b th')); pdAll(document.querySelector('button[data-table=b]'));"
                           "});</script>";
  ad::write_file_atomic(dir + "/sort.html", pd::html::page("sort", body));
  const Rendered r = render(chromium, dir + "/sort.html", dir);
  CHECK(r.console.empty());
  const std::string a = r.dom.substr(r.dom.find("id=\"a\""), r.dom.find("id=\"b\"") - r.dom.find("id=\"a\""));
  const std::string b = r.dom.substr(r.dom.find("id=\"b\""));
  // a: ascending, 0 1 2 ... (10 before 9 would be a text sort), rows past 50 capped again
  CHECK(a.find("data-v=\"0\">0</td>") < a.find("data-v=\"1\">1</td>"));
  CHECK(a.find("data-v=\"9\">9</td>") < a.find("data-v=\"10\">10</td>"));
  CHECK(count_of(a, "<tr class=\"capped\">") == 10);
  CHECK(a.find("data-v=\"49\">") < a.find("<tr class=\"capped\">"));
  CHECK(a.find("data-v=\"50\">") > a.find("<tr class=\"capped\">"));
  // b: clicked twice (descending), then show all: nothing capped
  CHECK(b.find("data-v=\"59\">59</td>") < b.find("data-v=\"58\">58</td>"));
  CHECK(count_of(b, "<tr class=\"capped\">") == 0);
}

TEST_CASE("pd sweep: an interrupted sweep resumes to the summary of an uninterrupted one") {
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  write_tiny_tms_configs(dir);
  const std::string pd_bin = pd_program();
  const std::string why = "no pd program at " + pd_bin + " (PD_BIN)";
  REQUIRE_MESSAGE(access(pd_bin.c_str(), X_OK) == 0, why);
  const std::vector<std::string> sweep = {"sweep", dir + "/spd.json", "--seeds", "0-1", "--jobs", "2", "--pd", pd_bin};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = sweep;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  // Interrupted halfway: both runs stop at step 15 with a checkpoint; no summary yet.
  REQUIRE(run_pd(with({"--out", dir + "/a", "--stop-after", "15"})) == 0);
  for (const char* s : {"/a/base/seed_0", "/a/base/seed_1"}) {
    CHECK(std::filesystem::exists(dir + s + "/checkpoint.safetensors"));
    CHECK(!std::filesystem::exists(dir + s + "/metrics.json"));
  }
  CHECK(!std::filesystem::exists(dir + "/a/summary.csv"));
  REQUIRE(run_pd(with({"--out", dir + "/a"})) == 0);  // resumes both
  const json m = json::parse(ad::read_file(dir + "/a/base/seed_1/metrics.json"));
  CHECK(m["resumed_from_step"] == 15);
  CHECK(m["seed"] == 1);
  REQUIRE(run_pd(with({"--out", dir + "/b"})) == 0);  // uninterrupted
  auto without_times = [](const std::string& csv) {
    std::stringstream in(csv);
    std::string out;
    for (std::string line; std::getline(in, line);)
      if (line.find("wall_time_s") == std::string::npos) out += line + "\n";
    return out;
  };
  const std::string a = without_times(ad::read_file(dir + "/a/summary.csv"));
  CHECK(count_of(a, "\nbase,mmcs,2,") == 1);
  CHECK(a == without_times(ad::read_file(dir + "/b/summary.csv")));
  CHECK(std::filesystem::exists(dir + "/a/compare.html"));
  CHECK(ad::read_file(dir + "/a/summary.md").find("| mmcs | 2 |") != std::string::npos);

  // A finished sweep is not run again; the summary stays the same.
  const auto before = std::filesystem::last_write_time(dir + "/a/base/seed_0/metrics.json");
  REQUIRE(run_pd(with({"--out", dir + "/a"})) == 0);
  CHECK(std::filesystem::last_write_time(dir + "/a/base/seed_0/metrics.json") == before);
  CHECK(without_times(ad::read_file(dir + "/a/summary.csv")) == a);

  // The same folder with another config: its finished runs are not taken for the new config's.
  json other = json::parse(ad::read_file(dir + "/spd.json"));
  other["C"] = 6;
  ad::write_file_atomic(dir + "/spd.json", other.dump());
  CHECK(run_pd(with({"--out", dir + "/a"})) == 1);
}

TEST_CASE("pd sweep: grid points, seeds and --set syntax") {
  CHECK(pd::parse_seeds("0-4") == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(pd::parse_seeds("0-1,7") == std::vector<int64_t>{0, 1, 7});
  for (const char* bad : {"", "4-1", "a", "1,,2", "-3", "1,1"}) CHECK_THROWS_AS(pd::parse_seeds(bad), ad::Error);
  const auto [key, values] = pd::parse_set("ci_fn.hidden=[4,4],[8]");
  CHECK(key == "ci_fn.hidden");
  REQUIRE(values.size() == 2);
  CHECK(values[0] == json::array({4, 4}));
  for (const char* bad : {"C", "=3", "C=", "C=1,,2"}) CHECK_THROWS_WITH_AS(pd::parse_set(bad), doctest::Contains(bad), ad::Error);
  const json base = json::parse(R"({"C": 8, "train": {"lr": 0.1}, "losses": [{"coeff": 1}]})");
  const auto grid = pd::make_grid(base, {pd::parse_set("C=4,6"), pd::parse_set("losses.0.coeff=2")}, "cfg.json");
  REQUIRE(grid.size() == 2);
  CHECK(grid[1].name == "C-6_losses.0.coeff-2");
  CHECK(grid[1].config["losses"][0]["coeff"] == 2);
  CHECK_THROWS_WITH_AS(pd::make_grid(base, {pd::parse_set("train.x.y=1")}, "cfg.json"),
                       doctest::Contains("cfg.json: --set key 'train.x.y'"), ad::Error);
  CHECK_THROWS_AS(pd::make_grid(base, {pd::parse_set("losses.3.coeff=1")}, "cfg.json"), ad::Error);
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  write_tiny_tms_configs(dir);
  CHECK(run_pd({"sweep", dir + "/spd.json", "--seeds", "0", "--set", "no_such_key=1", "--out", dir + "/s"}) == 1);
}
