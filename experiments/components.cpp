#include "experiments/components.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "autodiff/fileio.hpp"

namespace pd {

using nlohmann::json;

namespace {

// onehot_max_ci and serves_features of one layer from its CI on one-hot inputs [n_features, C].
void add_onehot(json& l, const decomp::Mat& ci, double threshold) {
  json serves = json::array(), onehot_max = json::array();
  for (int64_t c = 0; c < ci.cols; ++c) {
    double mx = 0;
    for (int64_t i = 0; i < ci.rows; ++i) mx = std::max(mx, ci(i, c));
    onehot_max.push_back(mx);
    serves.push_back(json::array());
  }
  for (int64_t i = 0; i < ci.rows; ++i) {  // feature i -> its argmax component
    int64_t best = 0;
    for (int64_t c = 1; c < ci.cols; ++c)
      if (ci(i, c) > ci(i, best)) best = c;
    if (ci.cols > 0 && ci(i, best) > threshold) serves[(size_t)best].push_back(i);
  }
  l["onehot_max_ci"] = onehot_max;
  l["serves_features"] = serves;
}

json context_json(const decomp::Context& c) {
  return {{"seq", c.seq}, {"pos", c.pos}, {"ci", c.ci}, {"before", c.before}, {"token", c.token}, {"after", c.after}};
}

// A number in a fixed-width column: "-" when absent or not finite.
std::string cell(const json& v, int width, int digits, bool sci = false) {
  std::ostringstream o;
  o << std::setw(width);
  if (!v.is_number() || !std::isfinite(v.get<double>())) o << "-";
  else o << (sci ? std::scientific : std::fixed) << std::setprecision(digits) << v.get<double>();
  return o.str();
}

const json& at_or_null(const json& arr, size_t i) {
  static const json null;
  return arr.is_array() && i < arr.size() ? arr[i] : null;
}

std::string layer_table(const json& c, const json& L, const ComponentTableOptions& opt) {
  const json& freq = L.at("ci_freq");
  const json none = json::array();
  const json& abl = L.contains("ablation_effect") ? L["ablation_effect"] : none;
  std::vector<size_t> alive;
  for (size_t i = 0; i < freq.size(); ++i)
    if (freq[i].get<double>() > 0) alive.push_back(i);
  auto key = [&](size_t i) {  // NaN (not measured) sorts last
    const json& v = opt.by_ablation ? at_or_null(abl, i) : freq[i];
    return v.is_number() ? v.get<double>() : -INFINITY;
  };
  std::stable_sort(alive.begin(), alive.end(), [&](size_t a, size_t b) { return key(a) > key(b); });
  const size_t shown = opt.top > 0 ? std::min(alive.size(), (size_t)opt.top) : alive.size();
  std::ostringstream o;
  o << "layer " << L.at("name").get<std::string>() << ": " << alive.size() << " of " << freq.size()
    << " components alive (CI > " << c.value("ci_threshold", json()).dump() << " somewhere), showing " << shown
    << ", by " << (opt.by_ablation ? "ablation effect" : "CI frequency") << "\n";
  const bool ctx = L.contains("top_contexts"), serves = L.contains("serves_features");
  o << std::setw(6) << "comp" << std::setw(10) << "CI freq" << std::setw(10) << "mean CI" << std::setw(10) << "norm"
    << std::setw(11) << "ablation" << (ctx ? "  top contexts (CI)" : serves ? "  serves features" : "") << "\n";
  const std::string indent(47, ' ');
  for (size_t k = 0; k < shown; ++k) {
    const size_t i = alive[k];
    o << std::setw(6) << i << cell(freq[i], 10, 4) << cell(at_or_null(L.at("ci_mean"), i), 10, 4)
      << cell(at_or_null(L.at("norm"), i), 10, 4) << cell(at_or_null(abl, i), 11, 2, true);
    if (serves) {
      o << " ";
      for (const json& f : L["serves_features"].at(i)) o << " " << f.dump();
    }
    if (ctx) {
      const json& list = L["top_contexts"].at(i);
      for (size_t j = 0; j < list.size() && (int64_t)j < opt.contexts; ++j) {
        decomp::Context cx;
        cx.before = list[j].at("before").get<std::string>();
        cx.token = list[j].at("token").get<std::string>();
        cx.after = list[j].at("after").get<std::string>();
        std::ostringstream v;
        v << std::fixed << std::setprecision(2) << list[j].at("ci").get<double>();
        o << (j ? "\n" + indent : std::string()) << "  " << v.str() << " \"" << decomp::show_context(cx) << "\"";
      }
    }
    o << "\n";
  }
  return o.str();
}

}  // namespace

json components_json(const decomp::Decomposition& spd, const ComponentAnalysis& a) {
  const decomp::EvalResult& ev = a.ev;
  json layers = json::array();
  for (size_t li = 0; li < ev.layers.size(); ++li) {
    const decomp::LayerEval& e = ev.layers[li];
    json l = {{"name", e.name}, {"norm", e.norm}, {"ci_freq", e.ci_freq}, {"ci_mean", e.ci_mean}};
    if (e.ci_onehot.rows > 0) add_onehot(l, e.ci_onehot, spd.cfg.ci_threshold);
    if (li < a.ablation.size()) {
      json ab = json::array();
      for (double v : a.ablation[li]) ab.push_back(std::isfinite(v) ? json(v) : json());
      l["ablation_effect"] = ab;
    }
    if (a.has_contexts && li < a.contexts.layers.size()) {
      json per = json::array();
      for (const auto& comp : a.contexts.layers[li]) {
        json list = json::array();
        for (const decomp::Context& c : comp) list.push_back(context_json(c));
        per.push_back(list);
      }
      l["top_contexts"] = per;
    }
    layers.push_back(l);
  }
  json j = {{"method", spd.method_name()},
            {"ci_threshold", spd.cfg.ci_threshold},
            {"ablation_batch", a.ablation_batch},
            {"layers", layers}};
  if (a.has_contexts) {
    const decomp::ContextOptions& o = a.contexts.opt;
    j["contexts"] = {{"sequences", o.sequences}, {"seq_len", a.contexts.seq_len}, {"seed", a.contexts.seed},
                     {"per_component", o.per_component}, {"before", o.before}, {"after", o.after}};
  }
  return j;
}

void write_components_json(const decomp::Decomposition& spd, const ComponentAnalysis& a, const std::string& dir) {
  ad::write_file_atomic(dir + "/components.json",
                        components_json(spd, a).dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

std::string layer_list(const json& c) {
  std::string s;
  for (const json& L : c.at("layers")) s += (s.empty() ? "" : ", ") + L.at("name").get<std::string>();
  return s;
}

std::string components_table(const json& c, const ComponentTableOptions& opt) {
  std::string out;
  bool found = opt.layer.empty();
  for (const json& L : c.at("layers")) {
    if (!opt.layer.empty() && L.at("name").get<std::string>() != opt.layer) continue;
    found = true;
    out += (out.empty() ? "" : "\n") + layer_table(c, L, opt);
  }
  if (!found) ad::fail("no decomposed layer '" + opt.layer + "' (the run decomposes " + layer_list(c) + ")");
  return out;
}

}  // namespace pd
