#include "decomp/config.hpp"

#include <set>

#include "autodiff/optim.hpp"

namespace decomp {

using models::ConfigSection;
using nlohmann::json;

namespace {

int64_t get_count(ConfigSection& s, const std::string& key, int64_t def, int64_t min) {
  const int64_t v = s.get_int(key, def);
  if (v < min) s.error(key, "must be >= " + std::to_string(min) + ", got " + std::to_string(v));
  return v;
}

void read_ci_fn(ConfigSection f, ComponentModelOptions& m) {
  try {
    m.ci_type = parse_ci_type(f.get_string("type", "mlp"));
  } catch (const models::ConfigError&) {
    throw;
  } catch (const ad::Error& e) {
    f.error("type", e.what());
  }
  if (f.has("hidden")) {
    m.ci_hidden.clear();
    for (double h : f.get_doubles("hidden", {})) {
      if (h != (double)(int64_t)h || h < 1) f.error("hidden", "must be a list of positive integers");
      m.ci_hidden.push_back((int64_t)h);
    }
  }
  m.global_ci = f.get_bool("global", m.global_ci);
  f.finish();
}

void read_train(ConfigSection t, TrainConfig& tc) {
  models::read_train_schedule(t, tc);
  for (auto& kv : tc.grad_clip_group)
    if (kv.first != "components" && kv.first != "ci_fns")
      t.error("grad_clip", "groups are \"components\" and \"ci_fns\", got \"" + kv.first + "\"");
  tc.faith_warmup_steps = get_count(t, "faith_warmup_steps", tc.faith_warmup_steps, 0);
  tc.faith_warmup_lr = t.get_double("faith_warmup_lr", tc.faith_warmup_lr);
  tc.faith_warmup_wd = t.get_double("faith_warmup_wd", tc.faith_warmup_wd);
  t.finish();
}

}  // namespace

SPDConfig parse_spd_config(const json& j, const std::string& where) {
  SPDConfig c;
  ConfigSection top(j, where, "");
  top.accept("name");
  top.accept("comment");
  top.accept("target");  // read by decomp/run/target
  c.seed = (uint64_t)get_count(top, "seed", 0, 0);
  c.model.C = get_count(top, "C", c.model.C, 1);
  read_ci_fn(top.section("ci_fn"), c.model);
  const std::string sampling = top.get_string("sampling", "continuous");
  if (sampling == "continuous") c.sampling = Sampling::continuous;
  else if (sampling == "binomial") c.sampling = Sampling::binomial;
  else top.error("sampling", "must be continuous or binomial, got '" + sampling + "'");
  c.delta = top.get_bool("delta", c.delta);
  c.leaky_alpha = top.get_double("leaky_alpha", c.leaky_alpha);
  c.ci_threshold = top.get_double("ci_threshold", c.ci_threshold);
  c.eval_batch = get_count(top, "eval_batch", c.eval_batch, 1);
  {
    ConfigSection dk = top.section("dense_k");
    for (auto it = dk.raw().begin(); it != dk.raw().end(); ++it) c.dense_k[it.key()] = get_count(dk, it.key(), 0, 1);
    dk.finish();
  }
  if (top.has("dense_k_groups")) {
    const json groups = top.get_raw("dense_k_groups");
    if (!groups.is_array()) top.error("dense_k_groups", "must be a list of {name, layers, k}");
    for (size_t i = 0; i < groups.size(); ++i) {
      ConfigSection g(groups[i], where, "dense_k_groups[" + std::to_string(i) + "]");
      DenseKGroup dg;
      dg.name = g.get_string("name");
      const json layers = g.get_raw("layers");
      if (!layers.is_array() || layers.empty()) g.error("layers", "must be a non-empty list of layer names");
      for (const json& l : layers) {
        if (!l.is_string()) g.error("layers", "must be a list of layer names");
        dg.layers.push_back(l.get<std::string>());
      }
      dg.k = g.get_int("k");
      if (dg.k < 1) g.error("k", "must be >= 1");
      g.finish();
      c.dense_k_groups.push_back(dg);
    }
  }
  const json losses = top.has("losses") ? top.get_raw("losses") : json();
  if (!losses.is_array() || losses.empty()) top.error("losses", "must be a non-empty list of {name, coeff, ...}");
  std::set<std::string> labels;
  for (size_t i = 0; i < losses.size(); ++i) {
    ConfigSection t(losses[i], where, "losses[" + std::to_string(i) + "]");
    std::shared_ptr<LossTerm> term = parse_loss_term(t);
    if (!labels.insert(term->label).second)
      t.error("label", "'" + term->label + "' names two terms; give each a distinct \"label\"");
    c.losses.push_back(term);
  }
  read_train(top.section("train"), c.train);
  top.finish();
  return c;
}

}  // namespace decomp
