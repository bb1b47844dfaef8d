#include "experiments/report_html.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "experiments/decomp_report.hpp"
#include "experiments/html.hpp"
#include "experiments/run_summary.hpp"
#include "models/config.hpp"

namespace pd {

using nlohmann::json;
namespace H = pd::html;

namespace {

double num_or_nan(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// METHODS 3.7 (SPD) and the APD paper's figures (METHODS section 2) for the TMS targets.
struct Published {
  double mmcs, ml2r;
  const char* source;
};
// The target is named by its run config's file name (experiments/configs/tms_5-2.json ->
// tms_5-2): the model's own name is only "tms".
bool published(const std::string& method, const json& cfg, Published* p) {
  if (!cfg.contains("target") || !cfg["target"].is_object() || !cfg["target"].contains("run_config") ||
      !cfg["target"]["run_config"].is_string())
    return false;
  const std::string target = std::filesystem::path(cfg["target"]["run_config"].get<std::string>()).stem().string();
  static const std::map<std::string, Published> table = {
      {"spd tms_5-2", {1.000, 0.993, "METHODS 3.7"}},      {"spd tms_40-10", {1.000, 1.010, "METHODS 3.7"}},
      {"spd tms_5-2-id", {1.000, 0.992, "METHODS 3.7"}},   {"spd tms_40-10-id", {1.000, 1.031, "METHODS 3.7"}},
      {"apd tms_5-2", {0.998, 0.893, "METHODS 2 (APD)"}}, {"apd tms_40-10", {0.996, 0.935, "METHODS 2 (APD)"}}};
  auto it = table.find(method + " " + target);
  if (it == table.end()) return false;
  *p = it->second;
  return true;
}

// The result table of `pd decompose` (result_table's columns) from metrics.json, with the
// published figures beside it where the target has them.
// Sequence targets (metrics.json "lm", decomp/evaluate_lm.hpp): KL and CE per masking strategy.
std::string lm_section(const json& m) {
  if (!m.contains("lm") || !m["lm"].is_object() || !m["lm"].contains("strategies")) return "";
  const json& lm = m["lm"];
  std::vector<std::vector<H::Cell>> rows;
  for (auto it = lm["strategies"].begin(); it != lm["strategies"].end(); ++it)
    rows.push_back({H::text(it.key()), H::num(num_or_nan(*it, "kl"), -4), H::num(num_or_nan(*it, "ce"), -4),
                    H::num(num_or_nan(*it, "ce_unrecovered"), -4)});
  return "<h3>Masking strategies (target CE " + H::escape(std::to_string(num_or_nan(lm, "ce_target"))) + ")</h3>\n" +
         H::table("lm-table", {"strategy", "KL", "CE", "ce_unrecovered"}, rows);
}

// metrics.json "failure_modes" (decomp/failure_modes.hpp): one row per detector.
std::string failure_section(const json& m) {
  if (!m.contains("failure_modes") || !m["failure_modes"].is_object()) return "";
  std::vector<std::vector<H::Cell>> rows;
  for (auto it = m["failure_modes"].begin(); it != m["failure_modes"].end(); ++it) {
    const json& f = *it;
    const bool applicable = f.value("applicable", true), hit = f.value("triggered", false);
    rows.push_back({H::text(it.key()), H::text(!applicable ? "n/a" : hit ? "YES" : "no"), H::num(num_or_nan(f, "figure"), -4),
                    H::num(num_or_nan(f, "threshold"), -4), H::text(f.value("detail", std::string()))});
  }
  return "<h3>Failure modes</h3>\n" + H::table("failure-table", {"mode", "triggered", "figure", "threshold", "what"}, rows);
}

std::string result_section(const RunSummary& r) {
  const json& m = r.metrics;
  std::vector<std::vector<H::Cell>> rows;
  for (const std::string& l : r.layers) {
    const json& L = m["layers"][l];
    const bool dense = L.contains("dense_k");
    std::vector<H::Cell> row = {H::text(l), H::num(num_or_nan(L, "C")), H::num(num_or_nan(L, "alive_components")),
                                H::num(num_or_nan(L, "large_norm_components")), H::num(num_or_nan(L, "ci_l0"), -3),
                                dense ? H::num(NAN) : H::num(num_or_nan(L, "identity_ci_error")),
                                H::num(num_or_nan(L, "dense_k_error")), H::num(num_or_nan(L, "mmcs"), -4),
                                H::num(num_or_nan(L, "ml2r"), -4)};
    rows.push_back(row);
  }
  std::string s = "<h2>Result</h2>\n" +
                  H::table("result-table", {"layer", "C", "alive", "norm>.1", "CI_L0", "id-err", "dense-k err", "MMCS", "ML2R"}, rows);
  Published p;
  if (published(r.method, m.value("config", json::object()), &p)) {
    std::vector<std::vector<H::Cell>> cmp = {
        {H::text("MMCS"), H::num(num_or_nan(m, "mmcs"), -4), H::num(p.mmcs, -3)},
        {H::text("ML2R"), H::num(num_or_nan(m, "ml2r"), -4), H::num(p.ml2r, -3)}};
    s += "<h3>Against the published figures (" + H::escape(p.source) + ")</h3>\n" +
         H::table("published-table", {"metric", "this run", "published"}, cmp);
  } else {
    s += "<p class=\"note\">No published figures for this method and target (METHODS lists them for the TMS "
         "targets).</p>\n";
  }
  std::vector<std::vector<H::Cell>> losses;
  const json none = json::object();
  const json& ev = m.contains("eval_losses") ? m["eval_losses"] : none;
  const json& tr = m.contains("final_train_losses") ? m["final_train_losses"] : none;
  for (auto it = ev.begin(); it != ev.end(); ++it)
    losses.push_back({H::text(it.key()), H::num(it->is_number() ? it->get<double>() : NAN),
                      H::num(num_or_nan(tr, it.key().c_str()))});
  s += "<h3>Final losses</h3>\n" + H::table("losses-table", {"term", "eval batch", "last training step"}, losses);
  return s + lm_section(m) + failure_section(m);
}

// Loss curves from a CSV with a "step" column: one line per other column not in `skip`.
std::string curves_section(const std::string& csv_path, const std::string& title, const std::vector<std::string>& skip) {
  if (!std::filesystem::exists(csv_path))
    return "<p class=\"note\">No " + H::escape(std::filesystem::path(csv_path).filename().string()) +
           " (a re-evaluation has no training log).</p>\n";
  const H::Csv c = H::read_csv(csv_path);
  const std::vector<double>* step = c.col("step");
  if (!step) ad::fail(csv_path + ": no 'step' column");
  std::vector<H::Series> series;
  for (size_t k = 0; k < c.names.size(); ++k)
    if (c.names[k] != "step" && std::find(skip.begin(), skip.end(), c.names[k]) == skip.end())
      series.push_back({c.names[k], *step, c.cols[k]});
  return H::line_chart(series, title, "step", true);
}

// The CI heatmap of every layer and cross-layer group, and the TMS direction plot.
std::string plots_section(const RunSummary& r) {
  std::string s = "<h2>Causal importance on one-hot inputs</h2>\n";
  auto figure = [&](const std::string& file, const std::string& name, const std::string& cls) {
    const std::string img = H::png_img(r.dir + "/" + file, name, cls);
    return "<figure data-name=\"" + H::escape(name) + "\">" +
           (img.empty() ? "<p class=\"note\">" + H::escape(file) + " was not rendered (gnuplot missing or failed)</p>" : img) +
           "<figcaption>" + H::escape(name) + "</figcaption></figure>\n";
  };
  bool any = false;
  for (const std::string& l : r.layers)
    if (r.metrics["layers"][l].contains("identity_ci_error"))
      s += figure("ci_" + file_safe(l) + ".png", l, "heatmap"), any = true;
  if (r.metrics.contains("dense_k_groups"))
    for (auto it = r.metrics["dense_k_groups"].begin(); it != r.metrics["dense_k_groups"].end(); ++it)
      s += figure("ci_group_" + file_safe(it.key()) + ".png", "group " + it.key(), "heatmap");
  if (!any) s += "<p class=\"note\">The target has no one-hot features: no CI heatmaps.</p>\n";
  if (r.metrics.contains("mmcs")) {
    s += "<h2>TMS directions</h2>\n";
    s += figure("tms_directions.png", "target columns against the matched subcomponents", "tms");
  }
  return s;
}

// One component table: norm, CI frequency / mean, one-hot CI and the features served.
std::string component_table(const json& L, size_t index, bool apd) {
  const std::string name = L.value("name", std::string("?"));
  const json& norm = L.at("norm");
  double largest = 0;
  for (const json& v : norm) largest = std::max(largest, v.get<double>());
  const bool onehot = L.contains("serves_features");
  std::vector<size_t> order(norm.size());
  for (size_t c = 0; c < order.size(); ++c) order[c] = c;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return norm[a].get<double>() > norm[b].get<double>(); });  // largest first
  std::vector<std::vector<H::Cell>> rows;
  for (size_t c : order) {
    const double n = norm[c].get<double>();
    std::vector<H::Cell> row = {H::num((double)c), H::num(n), H::num(largest > 0 ? n / largest : NAN, -3),
                                H::num(c < L.at("ci_freq").size() ? L.at("ci_freq").at(c).get<double>() : NAN, -4),
                                H::num(c < L.at("ci_mean").size() ? L.at("ci_mean").at(c).get<double>() : NAN, -4)};
    const bool has_ablation = L.contains("ablation_effect") && c < L.at("ablation_effect").size() &&
                              L.at("ablation_effect").at(c).is_number();
    row.push_back(H::num(has_ablation ? L.at("ablation_effect").at(c).get<double>() : NAN));
    if (onehot) {
      row.push_back(H::num(L.at("onehot_max_ci").at(c).get<double>(), -3));
      std::string f;
      for (const json& i : L.at("serves_features").at(c)) f += (f.empty() ? "" : " ") + i.dump();
      H::Cell cell = H::text(f);
      cell.sort = f.empty() ? "" : L.at("serves_features").at(c).at(0).dump();
      cell.numeric = true;
      row.push_back(cell);
    }
    rows.push_back(row);
  }
  std::vector<std::string> head = {"component", "norm", "norm / max", apd ? "top-k freq" : "CI freq",
                                   apd ? "mean kept" : "mean CI", "ablation effect"};
  if (onehot) head.insert(head.end(), {"max one-hot CI", "serves features"});
  return "<h3>" + H::escape(name) + "</h3>\n" + H::table("components-" + std::to_string(index), head, rows, 50);
}

// One context as HTML: before<mark>token</mark>after, line breaks and tabs shown as \n, \t.
std::string context_html(const json& cx) {
  auto part = [](const std::string& t) {
    std::string o;
    for (char ch : t) {
      const std::string one(1, ch);
      o += ch == '\n' ? "<span class=\"ws\">\\n</span>" : ch == '\t' ? "<span class=\"ws\">\\t</span>" : H::escape(one);
    }
    return o;
  };
  return "<code class=\"ctx\">" + part(cx.at("before").get<std::string>()) + "<mark>" +
         part(cx.at("token").get<std::string>()) + "</mark>" + part(cx.at("after").get<std::string>()) + "</code>";
}

// Sequence targets: the top-activating contexts of the layer's most frequently active
// components (CI frequency on the evaluation batch, at most kContextComponents).
std::string contexts_table(const json& L, size_t index) {
  constexpr size_t kContextComponents = 10;
  const json& freq = L.at("ci_freq");
  const json& ctx = L.at("top_contexts");
  std::vector<size_t> order;
  for (size_t c = 0; c < freq.size() && c < ctx.size(); ++c)
    if (freq[c].get<double>() > 0 && !ctx[c].empty()) order.push_back(c);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return freq[a].get<double>() > freq[b].get<double>(); });
  if (order.size() > kContextComponents) order.resize(kContextComponents);
  if (order.empty()) return "<p class=\"note\">No component of this layer is active in the context sequences.</p>\n";
  std::vector<std::vector<H::Cell>> rows;
  for (size_t c : order) {
    std::string html;
    for (const json& cx : ctx[c]) {
      char ci[32];
      std::snprintf(ci, sizeof ci, "%.2f", cx.at("ci").get<double>());
      html += (html.empty() ? "" : "<br>") + std::string(ci) + " " + context_html(cx);
    }
    H::Cell cell{html, "", false, "ctx"};
    rows.push_back({H::num((double)c), H::num(freq[c].get<double>(), -4),
                    H::num(L.at("ci_mean").at(c).get<double>(), -4), cell});
  }
  return "<h4>Top-activating contexts: " + H::escape(L.value("name", std::string("?"))) + "</h4>\n" +
         H::table("contexts-" + std::to_string(index), {"component", "CI freq", "mean CI", "top contexts (CI)"}, rows);
}

std::string components_section(const std::string& dir, bool apd) {
  const std::string file = dir + "/components.json";
  std::string s = "<h2>Components</h2>\n";
  if (!std::filesystem::exists(file))
    return s + "<p class=\"note\">No components.json in the folder (a run from before it was written).</p>\n";
  const json c = models::read_json_file(file);
  if (!c.contains("layers") || !c["layers"].is_array()) ad::fail(file + ": layers: missing or not an array");
  s += "<p class=\"note\">Per layer, sorted by norm ||P_c||<sub>F</sub> (click a header to sort). Frequency and mean "
       "over the evaluation batch (CI &gt; " +
       H::escape(c.value("ci_threshold", json()).dump()) +
       "); &ldquo;serves features&rdquo;: the one-hot inputs whose largest CI is this component's. Ablation effect: "
       "how much the output distance to the target (MSE; KL for logits) grows when this component alone is masked "
       "out (all others on), on " +
       H::escape(c.value("ablation_batch", json()).dump()) +
       " fresh examples; &ldquo;-&rdquo; for components below 1% of the layer's largest norm (or past the 200 "
       "largest), which are not measured.</p>\n";
  if (c.contains("contexts") && c["contexts"].is_object()) {
    const json& x = c["contexts"];
    s += "<p class=\"note\">Top-activating contexts: for the (up to) 10 components of a layer with the highest CI "
         "frequency, the sequences in which its CI is largest (ties: by the pre-sigmoid z), among " +
         H::escape(x.value("sequences", json()).dump()) + " sequences of " + H::escape(x.value("seq_len", json()).dump()) +
         " tokens drawn with seed " + H::escape(x.value("seed", json()).dump()) +
         ", each at its largest position (distinct texts only), shown with " +
         H::escape(x.value("before", json()).dump()) + " tokens before and " + H::escape(x.value("after", json()).dump()) +
         " after, the token itself marked; <code>pd components</code> prints the same for every component.</p>\n";
  }
  for (size_t i = 0; i < c["layers"].size(); ++i) {
    const json& L = c["layers"][i];
    const std::string where = file + ": layers[" + std::to_string(i) + "]";
    for (const char* k : {"norm", "ci_freq", "ci_mean"})
      if (!L.is_object() || !L.contains(k) || !L[k].is_array()) ad::fail(where + "." + k + ": missing or not an array");
    try {
      s += component_table(L, i, apd);
      if (L.contains("top_contexts")) s += contexts_table(L, i);
    } catch (const json::exception& e) {
      ad::fail(where + ": malformed (" + e.what() + ")");
    }
  }
  return s;
}

std::string config_section(const json& cfg) {
  return "<h2>Config</h2>\n<pre id=\"config\">" + H::escape(cfg.dump(2)) + "</pre>\n";
}

std::string run_line(const json& m) {
  std::ostringstream o;
  o << "seed " << m.value("seed", json()).dump() << ", " << m.value("steps", json()).dump() << " steps";
  if (m.contains("wall_time_s")) o << ", wall time " << fixed(m["wall_time_s"], 1) << " s";
  if (m.contains("evaluated_from")) o << ", evaluated from " << m["evaluated_from"].get<std::string>();
  return o.str();
}

}  // namespace

static std::string write_report_of(const RunSummary& r);
std::string write_decompose_report(const std::string& dir) { return write_report_of(read_run(dir)); }
std::string write_decompose_report(const std::string& dir, const json& metrics) {
  return write_report_of(summarize_run(dir, metrics));
}

static std::string write_report_of(const RunSummary& r) {
  const std::string& dir = r.dir;
  const json& m = r.metrics;
  std::string method = r.method;
  for (char& ch : method) ch = (char)std::toupper((unsigned char)ch);
  const std::string title = method + " decomposition of " + r.target;
  std::string body = "<h1>" + H::escape(title) + "</h1>\n<p>" + H::escape(run_line(m)) + "; folder " +
                     H::escape(dir) + "</p>\n";
  try {
    body += result_section(r);
    body += "<h2>Loss curves</h2>\n" + curves_section(dir + "/loss_curves.csv", "loss terms (unweighted), log scale", {});
    body += plots_section(r);
  } catch (const json::exception& e) {
    ad::fail(dir + "/metrics.json: malformed (" + std::string(e.what()) + ")");
  }
  body += components_section(dir, r.method == "apd");
  body += config_section(m.value("config", json::object()));
  const std::string path = dir + "/report.html";
  ad::write_file_atomic(path, H::page(title, body));
  return path;
}

std::string write_train_report(const std::string& dir) {
  const std::string file = dir + "/metrics.json";
  if (!std::filesystem::exists(file)) ad::fail(file + ": missing (not a finished pd run folder)");
  const json m = models::read_json_file(file);
  if (!m.is_object()) ad::fail(file + ": not a JSON object");
  std::vector<std::vector<H::Cell>> rows;
  for (auto it = m.begin(); it != m.end(); ++it)
    rows.push_back({H::text(it.key()), it->is_number() ? H::num(it->get<double>(), 6) : H::text(it->dump())});
  const std::string name = std::filesystem::path(dir).filename().string();
  std::string body = "<h1>Target training: " + H::escape(name) + "</h1>\n<h2>Metrics</h2>\n" +
                     H::table("metrics-table", {"metric", "value"}, rows);
  body += "<h2>Training curve</h2>\n" + curves_section(dir + "/curve.csv", "training loss, log scale", {"lr", "time_s"});
  const std::string cfg = dir + "/config.json";
  if (std::filesystem::exists(cfg)) body += config_section(models::read_json_file(cfg));
  const std::string path = dir + "/report.html";
  ad::write_file_atomic(path, H::page("Target training: " + name, body));
  return path;
}

std::string write_report(const std::string& dir) {
  const std::string file = dir + "/metrics.json";
  if (!std::filesystem::is_directory(dir)) ad::fail(dir + ": no such run folder");
  if (!std::filesystem::exists(file)) ad::fail(file + ": missing (the run has not finished, or is not a pd run)");
  const json m = models::read_json_file(file);
  return m.is_object() && m.contains("layers") ? write_decompose_report(dir) : write_train_report(dir);
}

}  // namespace pd
