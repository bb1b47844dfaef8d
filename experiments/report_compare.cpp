// write_compare_report (report_html.hpp): several decomposition runs on one page and in one CSV.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "experiments/html.hpp"
#include "experiments/report_html.hpp"
#include "experiments/run_summary.hpp"

namespace pd {

using nlohmann::json;
namespace H = pd::html;

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

// Config keys (dotted) whose values are not the same in every run; comment fields left out.
std::vector<std::string> differing_keys(const std::vector<std::map<std::string, std::string>>& cfgs) {
  std::set<std::string> keys;
  for (const auto& c : cfgs)
    for (const auto& kv : c) keys.insert(kv.first);
  std::vector<std::string> out;
  for (const std::string& k : keys) {
    if (k == "comment" || k == "seed") continue;  // the seed has its own column
    std::set<std::string> values;
    for (const auto& c : cfgs) values.insert(c.count(k) ? c.at(k) : "(absent)");
    if (values.size() > 1) out.push_back(k);
  }
  return out;
}

// A name per run: the shortest tail of its folder path that no other run shares
// ("C-6/seed_0" for a sweep's runs).
std::vector<std::string> run_labels(const std::vector<RunSummary>& runs) {
  std::vector<std::string> labels(runs.size());
  for (size_t parts = 1; parts <= 8; ++parts) {
    for (size_t i = 0; i < runs.size(); ++i) {
      std::filesystem::path p = std::filesystem::path(runs[i].dir).lexically_normal(), tail;
      std::vector<std::filesystem::path> comps(p.begin(), p.end());
      while (!comps.empty() && comps.back().empty()) comps.pop_back();  // trailing '/'
      for (size_t k = comps.size() > parts ? comps.size() - parts : 0; k < comps.size(); ++k) tail /= comps[k];
      labels[i] = tail.string();
    }
    std::set<std::string> unique(labels.begin(), labels.end());
    if (unique.size() == labels.size()) return labels;
  }
  for (size_t i = 0; i < runs.size(); ++i) labels[i] = runs[i].dir;
  return labels;
}

// Every loss term's curve, one chart per term with a line per run.
std::string overlaid_curves(const std::vector<RunSummary>& runs, const std::vector<std::string>& labels) {
  std::map<std::string, std::vector<H::Series>> by_term;
  std::vector<std::string> order;
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string f = runs[i].dir + "/loss_curves.csv";
    if (!std::filesystem::exists(f)) continue;
    const H::Csv c = H::read_csv(f);
    const std::vector<double>* step = c.col("step");
    if (!step) ad::fail(f + ": no 'step' column");
    for (size_t k = 0; k < c.names.size(); ++k) {
      if (c.names[k] == "step") continue;
      if (!by_term.count(c.names[k])) order.push_back(c.names[k]);
      by_term[c.names[k]].push_back({labels[i], *step, c.cols[k]});
    }
  }
  if (order.empty()) return "<p class=\"note\">No run has loss_curves.csv.</p>\n";
  std::string s;
  for (const std::string& t : order) s += H::line_chart(by_term[t], t + " (log scale)", "step", true);
  return s;
}

}  // namespace

std::string write_compare_report(const std::vector<std::string>& run_dirs, const std::string& out_dir,
                                 const std::string& title) {
  if (run_dirs.empty()) ad::fail("compare: no run folders given");
  std::vector<RunSummary> runs;
  std::vector<std::map<std::string, std::string>> cfgs;
  std::vector<std::string> metric_names;  // union, first-seen order
  std::vector<std::map<std::string, double>> metrics;
  for (const std::string& d : run_dirs) {
    runs.push_back(read_run(d));
    cfgs.push_back(flat_config(runs.back().metrics.value("config", json::object())));
    metrics.emplace_back();
    for (const auto& kv : scalar_metrics(runs.back())) {
      if (std::find(metric_names.begin(), metric_names.end(), kv.first) == metric_names.end())
        metric_names.push_back(kv.first);
      metrics.back()[kv.first] = kv.second;
    }
  }
  const std::vector<std::string> labels = run_labels(runs), diff = differing_keys(cfgs);
  std::vector<std::string> head = {"run", "target", "method", "seed"};
  head.insert(head.end(), diff.begin(), diff.end());
  head.insert(head.end(), metric_names.begin(), metric_names.end());
  std::string csv;
  for (size_t k = 0; k < head.size(); ++k) csv += (k ? "," : "") + csv_field(head[k]);
  csv += "\n";
  std::vector<std::vector<H::Cell>> rows;
  for (size_t i = 0; i < runs.size(); ++i) {
    std::vector<std::string> text = {labels[i], runs[i].target, runs[i].method, runs[i].metrics.value("seed", json()).dump()};
    std::vector<H::Cell> row;
    for (const std::string& t : text) row.push_back(H::text(t));
    for (const std::string& k : diff) {
      const std::string v = cfgs[i].count(k) ? cfgs[i].at(k) : "(absent)";
      text.push_back(v);
      const bool differs = v != (cfgs[0].count(k) ? cfgs[0].at(k) : "(absent)");
      row.push_back(H::text(v, differs ? "diff" : ""));
    }
    for (const std::string& n : metric_names) {
      const double v = metrics[i].count(n) ? metrics[i].at(n) : NAN;
      row.push_back(H::num(v, 5));
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.10g", v);
      text.push_back(std::isfinite(v) ? buf : "");
    }
    for (size_t k = 0; k < text.size(); ++k) csv += (k ? "," : "") + csv_field(text[k]);
    csv += "\n";
    rows.push_back(row);
  }
  std::string body = "<h1>" + H::escape(title) + "</h1>\n<p>" + std::to_string(runs.size()) +
                     " runs. Config keys that differ between them come after the seed; highlighted where a run "
                     "differs from the first.</p>\n" + "<div style=\"overflow-x:auto\">" + H::table("compare-table", head, rows, 200) + "</div>";
  if (diff.empty()) body += "<p class=\"note\">The configs are the same in every key.</p>\n";
  body += "<h2>Loss curves</h2>\n" + overlaid_curves(runs, labels);
  ad::prepare_output_dir(out_dir);
  ad::write_file_atomic(out_dir + "/compare.csv", csv);
  const std::string path = out_dir + "/compare.html";
  ad::write_file_atomic(path, H::page(title, body));
  return path;
}

}  // namespace pd
