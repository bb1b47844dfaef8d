#include "decomp/evaluate.hpp"

#include <algorithm>
#include <cmath>

namespace decomp {

using ad::Tensor;

Mat to_mat(const Tensor& t) {
  const int64_t cols = t.size(-1), rows = t.numel() / cols;
  Mat m(rows, cols);
  std::vector<double> v = t.to_vector();
  m.a = std::move(v);
  return m;
}

Mat join_columns(const std::vector<const Mat*>& parts) {
  if (parts.empty()) ad::fail("join_columns: no matrices");
  int64_t cols = 0;
  for (const Mat* p : parts) {
    if (p->rows != parts[0]->rows) ad::fail("join_columns: row counts differ");
    cols += p->cols;
  }
  Mat m(parts[0]->rows, cols);
  int64_t off = 0;
  for (const Mat* p : parts) {
    for (int64_t i = 0; i < p->rows; ++i)
      for (int64_t j = 0; j < p->cols; ++j) m(i, off + j) = (*p)(i, j);
    off += p->cols;
  }
  return m;
}

std::vector<std::shared_ptr<const LossTerm>> evaluated_terms(const DecompConfig& cfg) {
  std::vector<std::shared_ptr<const LossTerm>> terms = cfg.losses;
  for (const auto& kv : loss_term_table()) {
    if (!kv.second.monitor || !(kv.second.methods & (int)cfg.method)) continue;
    bool taken = false;  // a configured term already reports under this name
    for (const auto& t : cfg.losses) taken = taken || t->label == kv.first;
    if (!taken) terms.push_back(make_loss_term(kv.first));
  }
  return terms;
}

void check_dense_k(const Target& target, const std::map<std::string, int64_t>& dense_k,
                   const std::vector<DenseKGroup>& groups, const std::string& source) {
  std::string decomposed;
  for (const LayerSpec& l : target.layers) decomposed += (decomposed.empty() ? "" : ", ") + l.name;
  auto bad = [&](const std::string& key, const std::string& what) {
    ad::fail((source.empty() ? "" : source + ": ") + key + ": " + what);
  };
  auto check_layer = [&](const std::string& key, const std::string& name) {
    for (const LayerSpec& l : target.layers)
      if (l.name == name) return;
    bad(key, "no decomposed layer '" + name + "' (the " + target.name + " target decomposes " + decomposed + ")");
  };
  for (const auto& kv : dense_k) {
    if (target.n_features == 0) bad("dense_k", "needs a target with one-hot features; " + target.name + " has none");
    check_layer("dense_k." + kv.first, kv.first);
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string key = "dense_k_groups[" + std::to_string(i) + "]";
    if (target.n_features == 0)
      bad(key, "group '" + groups[i].name + "' needs a target with one-hot features; " + target.name + " has none");
    for (const std::string& name : groups[i].layers) check_layer(key + ".layers", name);
  }
}

EvalResult evaluate(const Decomposition& spd, ad::Rng& rng, const std::map<std::string, int64_t>& dense_k,
                    const std::vector<DenseKGroup>& groups) {
  check_dense_k(spd.target, dense_k, groups, "");
  ad::NoGradGuard ng;
  EvalResult r;
  const ComponentModel& cm = spd.cm;
  const double thr = spd.cfg.ci_threshold;
  // Sequence targets evaluate in chunks of 32 sequences (a 10k-sequence batch through a
  // vector_mlp CI function would need tens of GB); loss values are then chunk-size-weighted
  // means (every term is a per-element mean), CI_L0 the row-weighted mean, alive the union.
  const int64_t total = spd.cfg.eval_batch;
  // APD evaluates in chunks of its training batch: batch top-k then keeps K of each chunk as
  // in training (and gradient attributions hold [chunk, C, d_out] at once).
  int64_t chunk = spd.target.n_features > 0 ? total : std::min<int64_t>(total, 32);
  if (spd.cfg.method == Method::apd) chunk = std::min<int64_t>(total, spd.cfg.train.batch_size);
  std::vector<double> l0_sum(cm.layers.size(), 0.0);
  std::vector<int64_t> rows(cm.layers.size(), 0);
  std::vector<std::vector<bool>> any_active(cm.layers.size());
  std::vector<std::vector<double>> on_count(cm.layers.size()), ci_sum(cm.layers.size());
  const std::vector<std::shared_ptr<const LossTerm>> terms = evaluated_terms(spd.cfg);
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    const double w = (double)n / (double)total;
    Batch b = spd.target.sample(n, rng);
    StepState st = spd.prepare(b, rng);
    for (const auto& t : terms) r.losses[t->label] += w * spd.term(*t, b, st, 1.0, rng).item();
    if (spd.cfg.method != Method::apd) {  // APD's on-values are per component, not per column
      std::vector<LayerMask> zero(cm.layers.size());
      for (size_t l = 0; l < zero.size(); ++l) zero[l].m = ad::zeros(st.g_lower[l].shape(), st.g_lower[l].dtype());
      r.recon_zero += w * spd.distance(spd.forward_masked(b, zero, spd.reuse_target_pass ? &st.cache : nullptr),
                                       st.target_out).item();
    }
    for (size_t l = 0; l < cm.layers.size(); ++l) {
      Mat g = to_mat(st.g_lower[l]);
      l0_sum[l] += ci_l0(g, thr) * (double)g.rows;
      rows[l] += g.rows;
      any_active[l].resize(g.cols, false);
      on_count[l].resize(g.cols, 0.0);
      ci_sum[l].resize(g.cols, 0.0);
      for (int64_t i = 0; i < g.rows; ++i)
        for (int64_t c = 0; c < g.cols; ++c) {
          if (g(i, c) > thr) any_active[l][c] = true, on_count[l][c] += 1;
          ci_sum[l][c] += g(i, c);
        }
    }
  }

  std::vector<Tensor> onehot_on;  // per layer [nf, C]
  const int64_t nf = spd.target.n_features;
  if (nf > 0) {
    Batch ob;
    ob.size = nf;
    ob.x = ad::zeros({nf, nf}, spd.target.dtype);
    for (int64_t i = 0; i < nf; ++i) ob.x.set_item(i * nf + i, 0.75);
    onehot_on = spd.onehot_on(ob, rng);
  }
  const int64_t group = cm.opt.group;
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    const LayerComponents& L = cm.layers[l];
    LayerEval e;
    e.name = L.name;
    e.ci_l0 = l0_sum[l] / (double)rows[l];
    e.alive = 0;
    for (bool a : any_active[l]) e.alive += a;
    const LayerComponents& own = L.tied_src >= 0 ? cm.layers[(size_t)L.tied_src] : L;  // tied: same norms
    e.large_norm = large_norm_components(to_mat(own.V), to_mat(own.U), 0.1, group);
    e.norm = component_norms(to_mat(own.V), to_mat(own.U), group);
    for (size_t c = 0; c < on_count[l].size(); ++c) {
      e.ci_freq.push_back(on_count[l][c] / (double)rows[l]);
      e.ci_mean.push_back(ci_sum[l][c] / (double)rows[l]);
    }
    if (nf > 0) {
      e.ci_onehot = to_mat(onehot_on[l]);
      auto it = dense_k.find(L.name);
      e.identity_error = identity_ci_error(e.ci_onehot, &e.order);
      if (it != dense_k.end()) {
        e.dense_k = it->second;
        e.dense_k_error = dense_k_error(e.ci_onehot, it->second, &e.order);
        e.block_coverage = dense_k_block_coverage(e.ci_onehot, it->second, thr);
      }
    }
    if (nf > 0 && !L.embedding && L.tied_src < 0 && L.d_in == nf) {
      e.has_mmcs = true;
      const Mat W = to_mat(L.W), V = to_mat(L.V), U = to_mat(L.U);
      e.mm = mmcs_ml2r(W, V, U, 0, group);
      e.mm_large_norm = mmcs_ml2r(W, V, U, 0.1, group);
    }
    r.layers.push_back(e);
  }
  for (const DenseKGroup& g : groups) {  // layers and features checked above
    std::vector<const Mat*> parts;
    for (const std::string& name : g.layers)
      parts.push_back(&r.layers[(size_t)cm.index_of(name)].ci_onehot);  // r.layers in cm.layers' order
    GroupEval ge;
    ge.group = g;
    ge.ci_onehot = join_columns(parts);
    ge.dense_k_error = dense_k_error(ge.ci_onehot, g.k, &ge.order);
    ge.onehot_active = alive_components(ge.ci_onehot, thr);
    ge.block_coverage = dense_k_block_coverage(ge.ci_onehot, g.k, thr);
    r.groups.push_back(ge);
  }
  if (spd.target.distance == Distance::kl && spd.cfg.method != Method::apd) {
    // Its own generator from the seed alone: SPD and VPD runs of one seed see the same
    // sequences, whatever their loss terms drew above.
    ad::Rng lm_rng(ad::step_seed(spd.cfg.seed, 0, kLMEvalStream));
    r.has_lm = true;
    r.lm = evaluate_lm(spd, lm_rng, total, chunk);
  }
  return r;
}

// Components of one layer to ablate: the largest-norm ones above the floor, at most `most`.
static std::vector<int64_t> ablated(const std::vector<double>& norm, double rel_floor, int64_t most) {
  double largest = 0;
  for (double v : norm) largest = std::max(largest, v);
  std::vector<int64_t> c;
  for (size_t i = 0; i < norm.size(); ++i)
    if (largest > 0 && norm[i] > rel_floor * largest) c.push_back((int64_t)i);
  std::stable_sort(c.begin(), c.end(), [&](int64_t a, int64_t b) { return norm[(size_t)a] > norm[(size_t)b]; });
  if ((int64_t)c.size() > most) c.resize((size_t)most);
  return c;
}

std::vector<std::vector<double>> ablation_effects(const Decomposition& spd, const std::vector<LayerEval>& layers,
                                                  ad::Rng& rng, int64_t n, double rel_floor, int64_t max_per_layer) {
  ad::NoGradGuard ng;
  const ComponentModel& cm = spd.cm;
  const Batch b = spd.target.sample(n, rng);
  const StepState st = spd.prepare(b, rng);
  TargetPassCache* cache = spd.reuse_target_pass ? &st.cache : nullptr;
  std::vector<LayerMask> masks(cm.layers.size());
  for (size_t l = 0; l < masks.size(); ++l) {
    std::vector<int64_t> s = st.inputs[l].shape().to_vector();  // [..., d_in] -> [..., C]
    s.back() = cm.layers[l].C;
    masks[l].m = ad::ones(ad::Shape::from_vector(s), st.inputs[l].dtype());
  }
  const double base = spd.distance(spd.forward_masked(b, masks, cache), st.target_out).item();
  const int64_t m = cm.opt.group;  // columns per component
  std::vector<std::vector<double>> out(cm.layers.size());
  for (size_t l = 0; l < cm.layers.size(); ++l) {
    const int64_t cols = cm.layers[l].C, rows = masks[l].m.numel() / cols;
    out[l].assign((size_t)(cols / m), NAN);
    const ad::Tensor all_on = masks[l].m;
    for (int64_t c : ablated(layers[l].norm, rel_floor, max_per_layer)) {
      masks[l].m = ad::ones(all_on.shape(), all_on.dtype());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = c * m; k < (c + 1) * m; ++k) masks[l].m.set_item(r * cols + k, 0.0);
      out[l][(size_t)c] = spd.distance(spd.forward_masked(b, masks, cache), st.target_out).item() - base;
    }
    masks[l].m = all_on;
  }
  return out;
}

}  // namespace decomp
