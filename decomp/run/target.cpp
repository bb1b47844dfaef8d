#include "decomp/run/target.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>

#include "models/config.hpp"
#include "models/data.hpp"

namespace decomp {

using nlohmann::json;

Target make_target(std::shared_ptr<models::Model> model, const models::RunConfig& run,
                           const std::vector<std::string>& layer_names) {
  Target t;
  t.name = model->type();
  if (model->config().contains("n_features")) t.name += "_" + std::to_string(model->config()["n_features"].get<int64_t>());
  t.dtype = model->dtype();
  std::vector<models::LayerInfo> infos = model->layers();
  std::set<std::string> wanted(layer_names.begin(), layer_names.end());
  for (const std::string& n : layer_names) {
    bool found = false;
    for (auto& li : infos) found = found || li.name == n;
    if (!found) ad::fail("decompose: the " + model->type() + " target has no layer '" + n + "'");
  }
  for (const models::LayerInfo& li : infos) {
    if (!wanted.empty() && !wanted.count(li.name)) continue;
    LayerSpec s;
    s.name = li.name;
    s.weight = ad::detach(li.weight);
    // Tie only to a decomposed layer whose weight this one is the transpose of (TMS linear2).
    if (!li.tied_to.empty() && li.tied_transposed && (wanted.empty() || wanted.count(li.tied_to))) {
      bool src_listed = false;
      for (auto& o : infos) src_listed = src_listed || o.name == li.tied_to;
      if (src_listed) s.tied_to = li.tied_to;
    }
    t.layers.push_back(s);
  }
  if (run.data.type == "sparse_features") {
    t.n_features = run.data.sparse.n_features;
    t.distance = Distance::mse;
    const models::SparseFeatureSpec spec = run.data.sparse;
    const ad::DType dt = t.dtype;
    t.sample = [spec, dt](int64_t B, ad::Rng& rng) {
      Batch b;
      b.size = B;
      b.x = models::sample_sparse_features(spec, B, rng, dt);
      return b;
    };
    t.forward = [model](const Batch& b, models::ForwardHooks* h) { return model->forward(b.x, h); };
  } else if (run.data.type == "induction") {
    t.distance = Distance::kl;
    const int64_t vocab = run.model.at("vocab").get<int64_t>(), half = run.data.half_len;
    t.sample = [vocab, half](int64_t B, ad::Rng& rng) {
      Batch b;
      b.size = B;
      b.ids = models::sample_induction(vocab, half, B, rng).inputs;
      return b;
    };
    t.forward = [model](const Batch& b, models::ForwardHooks* h) { return model->forward_tokens(b.ids, h); };
  } else if (run.data.type == "text") {
    // Windows of the run's training stream, as the target trained on (the held-out part stays
    // unseen by the decomposition too).
    t.distance = Distance::kl;
    auto ds = std::make_shared<const models::TextDataset>(models::make_run_dataset(run.data));
    const json& mc = model->config();
    if (mc.contains("tokenizer") && !mc["tokenizer"].is_null() && mc["tokenizer"] != ds->tok.to_json())
      ad::fail("decompose: the " + model->type() + " target was trained with another tokenizer than the " +
               run.data.tokenizer + " tokenizer of corpus '" + run.data.corpus + "' its run config names");
    const int64_t len = run.data.seq_len;
    t.sample = [ds, len](int64_t B, ad::Rng& rng) {
      Batch b;
      b.size = B;
      b.ids = models::sample_text(ds->train, len, B, rng).inputs;
      return b;
    };
    t.forward = [model](const Batch& b, models::ForwardHooks* h) { return model->forward_tokens(b.ids, h); };
    t.tokenizer = std::shared_ptr<const models::Tokenizer>(ds, &ds->tok);  // keeps the dataset alive
  } else {
    ad::fail("decompose: targets with data type '" + run.data.type + "' are not supported yet");
  }
  return t;
}

static std::string dir_of(const std::string& p) {
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? "." : p.substr(0, s);
}
static std::string resolve(const std::string& p, const std::string& config_path) {
  if (p.empty() || p[0] == '/') return p;
  std::ifstream f(p);
  if (f.good()) return p;  // relative to the working directory (repo root)
  return dir_of(config_path) + "/" + p;
}

namespace {

// The config's "target" section, read and checked; the run config loaded.
struct TargetSection {
  json run_config;  // a path or an inline run config
  models::RunConfig run;
  std::string checkpoint;  // resolved; empty: train the target first
  std::vector<std::string> layers;
};

TargetSection read_target_section(const json& cfg, const std::string& config_path) {
  models::ConfigSection ts(cfg.contains("target") ? cfg["target"] : json(), config_path, "target");
  if (!ts.has("run_config")) ts.error("run_config", "required key is missing (a path or an inline run config)");
  TargetSection t;
  t.run_config = ts.get_raw("run_config");
  const std::string ckpt = ts.get_string("checkpoint", "");
  if (ts.has("layers")) {
    const json layers = ts.get_raw("layers");
    if (!layers.is_array()) ts.error("layers", "expected a list of layer names");
    for (const json& l : layers) {
      if (!l.is_string()) ts.error("layers", "expected a list of layer names, found " + models::shown(l));
      t.layers.push_back(l.get<std::string>());
    }
  }
  ts.finish();
  if (t.run_config.is_string()) {
    try {  // the error names the run config file and, through the key, this config
      t.run = models::load_run_config(resolve(t.run_config.get<std::string>(), config_path));
    } catch (const ad::Error& e) {
      ts.error("run_config", e.what());
    }
  } else {
    t.run = models::parse_run_config(t.run_config, config_path + ": target.run_config");
  }
  if (!ckpt.empty()) t.checkpoint = resolve(ckpt, config_path);
  return t;
}

// make_target, named after the run config when it is a file ("tms_5-2").
Target named_target(const TargetSection& ts, std::shared_ptr<models::Model> model) {
  Target t = make_target(std::move(model), ts.run, ts.layers);
  if (ts.run_config.is_string()) {
    std::string n = ts.run_config.get<std::string>();
    n = n.substr(n.find_last_of('/') + 1);
    t.name = n.substr(0, n.rfind(".json"));
  }
  return t;
}

}  // namespace

LoadedTarget load_target(const json& cfg, const std::string& config_path, const std::string& train_dir,
                         ad::DType dtype, bool quiet) {
  const TargetSection ts = read_target_section(cfg, config_path);
  LoadedTarget lt;
  lt.run = ts.run;
  if (!ts.checkpoint.empty()) {
    lt.checkpoint = ts.checkpoint;
    lt.model = models::load_model(lt.checkpoint, dtype);
  } else {
    if (!quiet) std::fprintf(stderr, "decompose: no target checkpoint given; training the target first\n");
    auto t0 = std::chrono::steady_clock::now();
    models::TrainOptions opts;
    opts.out_dir = train_dir;
    opts.progress = !quiet;
    models::TrainResult r = models::train(lt.run, opts);
    lt.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!train_dir.empty()) lt.checkpoint = train_dir + "/model.safetensors";
    if (dtype == r.model->dtype()) {
      lt.model = std::move(r.model);
    } else {
      ad::Rng rng(0);
      lt.model = models::make_model(r.model->config(), rng, dtype, "trained target");
      std::vector<std::pair<std::string, ad::Tensor>> vals;
      for (auto& p : r.model->parameters()) vals.emplace_back(p.name, p.value);
      lt.model->load_params(vals, "trained target");
    }
  }
  lt.target = named_target(ts, lt.model);
  return lt;
}

LoadedTarget untrained_target(const json& cfg, const std::string& config_path, ad::DType dtype) {
  const TargetSection ts = read_target_section(cfg, config_path);
  LoadedTarget lt;
  lt.run = ts.run;
  ad::Rng rng(1);
  lt.model = models::make_model(lt.run.model, rng, dtype, config_path);
  lt.target = named_target(ts, lt.model);
  return lt;
}

}  // namespace decomp
