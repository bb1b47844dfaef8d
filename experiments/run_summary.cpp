#include "experiments/run_summary.hpp"

#include <cstdio>
#include <filesystem>

#include "autodiff/error.hpp"
#include "models/config.hpp"

namespace pd {

using nlohmann::json;

RunSummary read_run(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) ad::fail(dir + ": no such run folder");
  const std::string file = dir + "/metrics.json";
  if (!std::filesystem::exists(file)) ad::fail(file + ": missing (the run has not finished, or is not a pd run)");
  return summarize_run(dir, models::read_json_file(file));
}

RunSummary summarize_run(const std::string& dir, json metrics) {
  const std::string file = dir + "/metrics.json";
  RunSummary r;
  r.dir = dir;
  r.metrics = std::move(metrics);
  const json& m = r.metrics;
  if (!m.is_object()) ad::fail(file + ": not a JSON object");
  // Read through a ConfigSection for its errors ("<file>: target: expected a string, got ...");
  // the other fields are shown as they are, so no finish().
  models::ConfigSection s(m, file, "");
  for (const char* k : {"layers", "target", "steps"})
    if (!s.has(k)) s.error(k, "missing (not a pd decompose metrics.json)");
  if (!m["layers"].is_object()) s.error("layers", "expected an object (layer name -> metrics)");
  r.target = s.get_string("target");
  r.method = s.get_string("method", "spd");
  for (auto it = m["layers"].begin(); it != m["layers"].end(); ++it) {
    if (!it->is_object()) ad::fail(file + ": layers." + ad::clip_for_message(it.key()) + ": not an object");
    r.layers.push_back(it.key());
  }
  return r;
}

std::string fixed(const json& v, int digits) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v.get<double>());
  return buf;
}

std::string per_layer(const json& layers, const char* key) {
  std::string s;
  bool any = false;
  for (auto it = layers.begin(); it != layers.end(); ++it) {
    s += (s.empty() ? "" : " / ") + (it->contains(key) ? (*it)[key].dump() : std::string("-"));
    any = any || it->contains(key);
  }
  return any ? s : "-";
}

std::vector<std::pair<std::string, double>> scalar_metrics(const RunSummary& r) {
  std::vector<std::pair<std::string, double>> out;
  const json& m = r.metrics;
  auto add = [&](const std::string& name, const json& v) {
    if (v.is_number()) out.emplace_back(name, v.get<double>());
  };
  add("mmcs", m.value("mmcs", json()));
  add("ml2r", m.value("ml2r", json()));
  for (const std::string& l : r.layers) {
    const json& L = m["layers"][l];
    for (const char* k : {"alive_components", "large_norm_components", "ci_l0", "identity_ci_error", "dense_k_error"})
      add(l + "." + k, L.value(k, json()));
  }
  if (m.contains("eval_losses") && m["eval_losses"].is_object())
    for (auto it = m["eval_losses"].begin(); it != m["eval_losses"].end(); ++it) add("eval." + it.key(), *it);
  add("steps", m["steps"]);
  add("wall_time_s", m.value("wall_time_s", json()));
  return out;
}

static void flatten(const json& v, const std::string& path, std::map<std::string, std::string>& out) {
  if (v.is_object() && !v.empty()) {
    for (auto it = v.begin(); it != v.end(); ++it) flatten(*it, path.empty() ? it.key() : path + "." + it.key(), out);
  } else if (v.is_array() && !v.empty() && (v[0].is_object() || v[0].is_array())) {
    for (size_t i = 0; i < v.size(); ++i) flatten(v[i], path + "." + std::to_string(i), out);
  } else {
    out[path] = v.is_string() ? v.get<std::string>() : v.dump();
  }
}

std::map<std::string, std::string> flat_config(const json& cfg) {
  std::map<std::string, std::string> out;
  flatten(cfg, "", out);
  return out;
}

}  // namespace pd
