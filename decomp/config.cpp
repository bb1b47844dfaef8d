#include "decomp/config.hpp"

#include <cmath>
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

// "ci_fn": {"type": "transformer", "global": true, "d_model", "n_heads", "n_blocks", "d_mlp", "rope"}
void read_ci_transformer(ConfigSection& f, ComponentModelOptions& m) {
  if (!m.global_ci)
    f.error("global", "type transformer is a global CI function (one network over every layer's input); set \"global\": true");
  CITransformerOptions& t = m.ci_transformer;
  t.d_model = get_count(f, "d_model", t.d_model, 1);
  t.n_heads = get_count(f, "n_heads", t.n_heads, 1);
  t.n_blocks = get_count(f, "n_blocks", t.n_blocks, 1);
  t.d_mlp = get_count(f, "d_mlp", t.d_mlp, 1);
  t.rope = f.get_bool("rope", t.rope);
  if (t.d_model % t.n_heads)
    f.error("n_heads", "must divide d_model " + std::to_string(t.d_model) + ", got " + std::to_string(t.n_heads));
  if (t.rope && (t.d_model / t.n_heads) % 2)
    f.error("rope", "needs an even head dimension d_model / n_heads, got " + std::to_string(t.d_model / t.n_heads) +
                        " (change n_heads or set \"rope\": false)");
}

void read_ci_fn(ConfigSection f, ComponentModelOptions& m) {
  try {
    m.ci_type = parse_ci_type(f.get_string("type", "mlp"));
  } catch (const models::ConfigError&) {
    throw;
  } catch (const ad::Error& e) {
    f.error("type", e.what());
  }
  m.global_ci = f.get_bool("global", m.global_ci);
  if (m.ci_type == CIType::transformer) {
    read_ci_transformer(f, m);  // no "hidden": finish() names it as not a key
  } else if (f.has("hidden")) {
    m.ci_hidden.clear();
    for (double h : f.get_doubles("hidden", {})) {
      if (h != (double)(int64_t)h || h < 1) f.error("hidden", "must be a list of positive integers");
      m.ci_hidden.push_back((int64_t)h);
    }
  }
  if (m.ci_type == CIType::transformer)
    f.finish("is not a key of the transformer CI function (type, global, d_model, n_heads, n_blocks, d_mlp, rope)");
  f.finish();
}

void read_train(ConfigSection t, TrainConfig& tc) {
  models::read_train_schedule(t, tc);
  for (auto& kv : tc.grad_clip_group)
    if (kv.first != "components" && kv.first != "ci_fns")
      t.error("grad_clip", "groups are \"components\" and \"ci_fns\", got \"" + kv.first + "\"");
  tc.faith_warmup_steps = get_count(t, "faith_warmup_steps", tc.faith_warmup_steps, 0);
  tc.faith_warmup_lr = t.get_double("faith_warmup_lr", tc.faith_warmup_lr);
  if (!(tc.faith_warmup_lr > 0) || !std::isfinite(tc.faith_warmup_lr)) t.error("faith_warmup_lr", "must be a finite number > 0");
  tc.faith_warmup_wd = t.get_double("faith_warmup_wd", tc.faith_warmup_wd);
  if (!(tc.faith_warmup_wd >= 0) || !std::isfinite(tc.faith_warmup_wd)) t.error("faith_warmup_wd", "must be a finite number >= 0");
  t.finish();
}

void read_apd(ConfigSection& top, DecompConfig& c) {
  APDOptions& a = c.apd;
  if (!top.has("m")) top.error("m", "is required for method apd (rank of each component per layer)");
  a.m = get_count(top, "m", 0, 1);
  a.topk = top.get_double("topk", a.topk);
  if (!(a.topk >= 0) || !std::isfinite(a.topk)) top.error("topk", "must be a finite number >= 0");
  const std::string attr = top.get_string("attribution", "gradient");
  if (attr == "gradient") a.attribution = Attribution::gradient;
  else if (attr == "ablation") a.attribution = Attribution::ablation;
  else if (attr == "activation") a.attribution = Attribution::activation;
  else top.error("attribution", "must be gradient, ablation or activation, got '" + attr + "'");
  a.unit_norm_A = top.get_bool("unit_norm_A", a.unit_norm_A);
  const std::string model = top.get_string("attribution_model", "target");
  if (model == "apd") a.attribute_apd_model = true;
  else if (model != "target") top.error("attribution_model", "must be target or apd, got '" + model + "'");
  if (a.attribute_apd_model && a.attribution != Attribution::gradient)
    top.error("attribution_model", "applies to gradient attributions only");
  c.model.init_scale = top.get_double("init_scale", 1.0);
  if (!(c.model.init_scale > 0) || !std::isfinite(c.model.init_scale))
    top.error("init_scale", "must be a finite number > 0");
  const std::string init = top.get_string("init", "normal");
  if (init == "kaiming_uniform") c.model.init = ComponentInit::kaiming_uniform;
  else if (init != "normal") top.error("init", "must be normal or kaiming_uniform, got '" + init + "'");
  c.model.group = a.m;
  int64_t columns = 0;  // ComponentModel counts columns
  if (__builtin_mul_overflow(c.model.C, a.m, &columns))
    top.error("m", "C " + std::to_string(c.model.C) + " x m " + std::to_string(a.m) + " columns overflow a 64-bit count");
  c.model.C = columns;
  c.model.ci_functions = false;
}

void read_spd(ConfigSection& top, DecompConfig& c) {
  read_ci_fn(top.section("ci_fn"), c.model);
  const std::string sampling = top.get_string("sampling", "continuous");
  if (sampling == "continuous") c.sampling = Sampling::continuous;
  else if (sampling == "binomial") c.sampling = Sampling::binomial;
  else top.error("sampling", "must be continuous or binomial, got '" + sampling + "'");
  c.delta = top.get_bool("delta", c.delta);
  c.leaky_alpha = top.get_double("leaky_alpha", c.leaky_alpha);
}

}  // namespace

const char* method_name(Method m) { return m == Method::apd ? "apd" : m == Method::vpd ? "vpd" : "spd"; }
const char* attribution_name(Attribution a) {
  return a == Attribution::gradient ? "gradient" : a == Attribution::ablation ? "ablation" : "activation";
}

DecompConfig parse_decomp_config(const json& j, const std::string& where) {
  DecompConfig c;
  c.source = where;
  ConfigSection top(j, where, "");
  top.accept("name");
  top.accept("comment");
  top.accept("target");  // read by decomp/run/target
  c.seed = (uint64_t)get_count(top, "seed", 0, 0);
  const std::string method = top.get_string("method", "spd");
  if (method == "apd") c.method = Method::apd;
  else if (method == "vpd") c.method = Method::vpd;
  else if (method != "spd") top.error("method", "must be spd, apd or vpd, got '" + method + "'");
  c.model.C = get_count(top, "C", c.model.C, 1);
  // A key of the other method is left unread, so finish() reports it as not a key.
  if (c.method == Method::apd) read_apd(top, c);
  else read_spd(top, c);
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
    if (!(loss_term_table().at(term->kind).methods & (int)c.method))
      t.error("name", "'" + term->kind + "' is not a loss term of method " + method_name(c.method));
    if (!labels.insert(term->label).second)
      t.error("label", "'" + term->label + "' names two terms; give each a distinct \"label\"");
    c.losses.push_back(term);
  }
  read_train(top.section("train"), c.train);
  top.finish();
  return c;
}

}  // namespace decomp
