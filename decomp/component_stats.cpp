#include "decomp/component_stats.hpp"

#include <algorithm>
#include <cmath>

#include "decomp/evaluate.hpp"
#include "models/data.hpp"

namespace decomp {

// ---- AUROC -----------------------------------------------------------------------------------

std::vector<int64_t> ascending_order(const float* score, int64_t n) {
  std::vector<int64_t> o((size_t)n);
  for (int64_t i = 0; i < n; ++i) o[(size_t)i] = i;
  std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  return o;
}

double auroc_sorted(const float* score, const std::vector<int64_t>& ascending, const std::vector<int8_t>& label) {
  // Walk the scores upwards one group of equal scores at a time; only labelled positions take
  // ranks. A group holding ranks r+1 .. r+g gives each its average rank r + (g+1)/2.
  double rank_sum_pos = 0;
  int64_t n_pos = 0, n_neg = 0;
  const size_t n = ascending.size();
  for (size_t i = 0; i < n;) {
    size_t j = i;
    int64_t g_pos = 0, g_all = 0;
    for (; j < n && score[ascending[j]] == score[ascending[i]]; ++j) {
      const int8_t y = label[(size_t)ascending[j]];
      if (y < 0) continue;
      ++g_all;
      if (y > 0) ++g_pos;
    }
    const double below = (double)(n_pos + n_neg);  // labelled positions ranked lower
    rank_sum_pos += (double)g_pos * (below + (double)(g_all + 1) / 2.0);
    n_pos += g_pos;
    n_neg += g_all - g_pos;
    i = j;
  }
  if (n_pos == 0 || n_neg == 0) return NAN;
  const double u = rank_sum_pos - (double)n_pos * (double)(n_pos + 1) / 2.0;
  return u / ((double)n_pos * (double)n_neg);
}

double auroc(const std::vector<float>& score, const std::vector<int8_t>& label) {
  if (score.size() != label.size())
    ad::fail("auroc: " + std::to_string(score.size()) + " scores but " + std::to_string(label.size()) + " labels");
  return auroc_sorted(score.data(), ascending_order(score.data(), (int64_t)score.size()), label);
}

// ---- CI on sequences ---------------------------------------------------------------------------

SequenceCI sequence_ci(const Decomposition& spd, const std::vector<int32_t>& ids, int64_t n_seq, int64_t seq_len,
                       ad::Rng& rng, int64_t chunk, bool keep_z) {
  if (n_seq < 1 || seq_len < 1 || (int64_t)ids.size() != n_seq * seq_len)
    ad::fail("sequence_ci: " + std::to_string(ids.size()) + " token ids are not " + std::to_string(n_seq) + " x " +
             std::to_string(seq_len));
  ad::NoGradGuard ng;
  SequenceCI r;
  r.n_seq = n_seq;
  r.seq_len = seq_len;
  const size_t L = spd.cm.layers.size();
  r.ci.resize(L);
  r.C.assign(L, 0);
  const int64_t P = n_seq * seq_len;
  // [rows, C] of one chunk into the component-major store at the chunk's first position.
  auto store = [&](std::vector<float>& dst, const Mat& g, int64_t first) {
    if (dst.empty()) dst.assign((size_t)(g.cols * P), 0.0f);
    for (int64_t i = 0; i < g.rows; ++i)
      for (int64_t c = 0; c < g.cols; ++c) dst[(size_t)(c * P + first + i)] = (float)g(i, c);
  };
  for (int64_t s0 = 0; s0 < n_seq; s0 += chunk) {
    const int64_t n = std::min(chunk, n_seq - s0);
    Batch b;
    b.size = n;
    b.ids = ad::Indices(std::vector<int32_t>(ids.begin() + s0 * seq_len, ids.begin() + (s0 + n) * seq_len), {n, seq_len});
    const StepState st = spd.prepare(b, rng);
    if (keep_z && st.z.size() == L) r.z.resize(L);
    for (size_t l = 0; l < L; ++l) {
      const Mat g = to_mat(st.g_lower[l]);  // [n seq_len, C]
      if (g.rows != n * seq_len)
        ad::fail("sequence_ci: layer " + spd.cm.layers[l].name + " has " + std::to_string(g.rows) + " CI rows for " +
                 std::to_string(n * seq_len) + " positions (not one per token)");
      r.C[l] = g.cols;
      store(r.ci[l], g, s0 * seq_len);
      if (!r.z.empty()) store(r.z[l], to_mat(st.z[l]), s0 * seq_len);
    }
  }
  return r;
}

// ---- top-activating contexts ---------------------------------------------------------------------

std::vector<int64_t> best_per_sequence(const float* ci, const float* z, int64_t n_seq, int64_t seq_len) {
  std::vector<int64_t> best((size_t)n_seq, -1);
  for (int64_t s = 0; s < n_seq; ++s) {
    int64_t b = -1;
    for (int64_t p = s * seq_len; p < (s + 1) * seq_len; ++p) {
      if (!(ci[p] > 0)) continue;
      if (b < 0 || ci[p] > ci[b] || (ci[p] == ci[b] && z && z[p] > z[b])) b = p;
    }
    best[(size_t)s] = b < 0 ? -1 : b - s * seq_len;
  }
  return best;
}

Context context_at(const models::Tokenizer* tok, const int32_t* seq, int64_t seq_len, int64_t pos, int64_t before,
                   int64_t after) {
  auto text = [&](int64_t a, int64_t b) {  // tokens [a, b)
    a = std::max<int64_t>(a, 0), b = std::min(b, seq_len);
    if (a >= b) return std::string();
    if (tok) return tok->decode(std::vector<int32_t>(seq + a, seq + b));
    std::string s;
    for (int64_t i = a; i < b; ++i) s += (i > a ? " " : "") + std::to_string(seq[i]);
    return s;
  };
  Context c;
  c.pos = pos;
  c.before = text(pos - before, pos);
  c.token = text(pos, pos + 1);
  c.after = text(pos + 1, pos + 1 + after);
  if (!tok) {  // numbers need their separators
    if (!c.before.empty()) c.before += " ";
    if (!c.after.empty()) c.after = " " + c.after;
  }
  return c;
}

std::string show_context(const Context& c) {
  std::string s;
  auto add = [&](const std::string& t) {
    for (char ch : t) {
      if (ch == '\n') s += "\\n";
      else if (ch == '\t') s += "\\t";
      else if (ch == '\r') s += "\\r";
      else s += ch;
    }
  };
  add(c.before);
  s += "[";
  add(c.token);
  s += "]";
  add(c.after);
  return s;
}

TopContexts top_contexts(const Decomposition& spd, const ContextOptions& opt, uint64_t seed) {
  if (spd.target.n_features > 0) ad::fail("top_contexts: the " + spd.target.name + " target has no token sequences");
  if (opt.sequences < 1 || opt.per_component < 1 || opt.before < 0 || opt.after < 0)
    ad::fail("top_contexts: need sequences >= 1, per_component >= 1, before and after >= 0");
  ad::Rng rng(seed);
  const Batch b = spd.target.sample(opt.sequences, rng);
  if (b.ids.shape.nd != 2) ad::fail("top_contexts: the " + spd.target.name + " target's batches are not [B, T] token ids");
  TopContexts r;
  r.opt = opt;
  r.seed = seed;
  r.seq_len = b.ids.shape[1];
  // One chunk of sequences at a time keeps memory at one chunk's CI. Each sequence offers its
  // best position per component; the running list keeps the K best with distinct text.
  const int64_t chunk = 32, S = r.seq_len, K = opt.per_component;
  const size_t L = spd.cm.layers.size();
  r.layers.assign(L, {});
  auto before = [](const Context& a, const Context& b2) {
    if (a.ci != b2.ci) return a.ci > b2.ci;
    if (std::isfinite(a.z) && std::isfinite(b2.z) && a.z != b2.z) return a.z > b2.z;
    return a.seq < b2.seq;
  };
  for (int64_t s0 = 0; s0 < opt.sequences; s0 += chunk) {
    const int64_t n = std::min(chunk, opt.sequences - s0);
    const std::vector<int32_t> ids(b.ids.v.begin() + s0 * S, b.ids.v.begin() + (s0 + n) * S);
    const SequenceCI ci = sequence_ci(spd, ids, n, S, rng, chunk, true);
    for (size_t l = 0; l < L; ++l) {
      r.layers[l].resize((size_t)ci.C[l]);
      for (int64_t c = 0; c < ci.C[l]; ++c) {
        std::vector<Context>& acc = r.layers[l][(size_t)c];
        const float *g = ci.component(l, c), *z = ci.component_z(l, c);
        const std::vector<int64_t> best = best_per_sequence(g, z, n, S);
        for (int64_t s = 0; s < n; ++s) {
          if (best[(size_t)s] < 0) continue;
          const int64_t p = s * S + best[(size_t)s];
          Context cx = context_at(spd.target.tokenizer.get(), ids.data() + s * S, S, best[(size_t)s], opt.before, opt.after);
          cx.seq = s0 + s;
          cx.ci = g[p];
          if (z) cx.z = z[p];
          acc.push_back(std::move(cx));
        }
        std::stable_sort(acc.begin(), acc.end(), before);
        std::vector<Context> kept;
        for (Context& cx : acc) {
          bool seen = false;
          for (const Context& k : kept) seen = seen || (k.before == cx.before && k.token == cx.token && k.after == cx.after);
          if (!seen && (int64_t)kept.size() < K) kept.push_back(std::move(cx));
        }
        acc = std::move(kept);
      }
    }
  }
  return r;
}

}  // namespace decomp
