#include "decomp/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>

#include "autodiff/tensor.hpp"

namespace decomp {

std::vector<int64_t> hungarian_max(const Mat& score) {
  // Classic potentials formulation (minimisation of cost = -score), 1-based internally.
  const int64_t n = score.rows, m = score.cols;
  if (n > m) ad::fail("hungarian_max: needs rows <= cols, got " + std::to_string(n) + " x " + std::to_string(m));
  // An inf or NaN score makes every potential update inf/NaN and the augmenting loop never ends.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j)
      if (!std::isfinite(score(i, j)))
        ad::fail("hungarian_max: score matrix entry (" + std::to_string(i) + ", " + std::to_string(j) + ") is " +
                 std::to_string(score(i, j)) + "; the assignment needs finite scores");
  const double INF = std::numeric_limits<double>::infinity();
  std::vector<double> u((size_t)n + 1, 0), v((size_t)m + 1, 0);
  std::vector<int64_t> p((size_t)m + 1, 0), way((size_t)m + 1, 0);
  for (int64_t i = 1; i <= n; ++i) {
    p[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv((size_t)m + 1, INF);
    std::vector<char> used((size_t)m + 1, 0);
    do {
      used[j0] = 1;
      const int64_t i0 = p[j0];
      double delta = INF;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double cur = -score(i0 - 1, j - 1) - u[i0] - v[j];
        if (cur < minv[j]) minv[j] = cur, way[j] = j0;
        if (minv[j] < delta) delta = minv[j], j1 = j;
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[j]) u[p[j]] += delta, v[j] -= delta;
        else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  std::vector<int64_t> col_of_row((size_t)n, -1);
  for (int64_t j = 1; j <= m; ++j)
    if (p[j]) col_of_row[p[j] - 1] = j - 1;
  return col_of_row;
}

double ci_l0(const Mat& ci, double thr) {
  if (ci.rows == 0) return 0;
  int64_t n = 0;
  for (double x : ci.a) n += x > thr;
  return (double)n / (double)ci.rows;
}

int64_t alive_components(const Mat& ci, double thr) {
  int64_t alive = 0;
  for (int64_t c = 0; c < ci.cols; ++c) {
    bool any = false;
    for (int64_t i = 0; i < ci.rows && !any; ++i) any = ci(i, c) > thr;
    alive += any;
  }
  return alive;
}

static std::vector<int64_t> by_mass(const Mat& ci, const std::vector<int64_t>& cols) {
  std::vector<double> mass((size_t)ci.cols, 0);
  for (int64_t i = 0; i < ci.rows; ++i)
    for (int64_t c = 0; c < ci.cols; ++c) mass[c] += ci(i, c);
  std::vector<int64_t> o = cols;
  std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) { return mass[a] > mass[b]; });
  return o;
}

int64_t identity_ci_error(const Mat& ci, std::vector<int64_t>* order) {
  const int64_t n = ci.rows;
  if (n > ci.cols) {
    // More features than components: the identity pattern cannot hold; every feature without
    // a column counts as a diagonal error.
    Mat t(ci.rows, ci.rows, 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < ci.cols; ++c) t(i, c) = ci(i, c);
    const int64_t err = identity_ci_error(t, order);
    if (order)  // an order of ci's columns: the padding columns go (plots index ci with it)
      order->erase(std::remove_if(order->begin(), order->end(), [&](int64_t c) { return c >= ci.cols; }), order->end());
    return err;
  }
  std::vector<int64_t> match = hungarian_max(ci);
  std::vector<char> is_matched((size_t)ci.cols, 0);
  for (int64_t c : match) is_matched[c] = 1;
  int64_t err = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < ci.cols; ++c) {
      if (c == match[i]) err += ci(i, c) < 0.9;
      else err += ci(i, c) > 0.1;
    }
  if (order) {
    std::vector<int64_t> rest;
    for (int64_t c = 0; c < ci.cols; ++c)
      if (!is_matched[c]) rest.push_back(c);
    *order = match;
    std::vector<int64_t> r = by_mass(ci, rest);
    order->insert(order->end(), r.begin(), r.end());
  }
  return err;
}

void component_row(const Mat& V, const Mat& U, int64_t c, int64_t m, int64_t j, std::vector<double>& row) {
  row.assign((size_t)U.cols, 0.0);
  for (int64_t k = c * m; k < (c + 1) * m; ++k) {
    const double v = V(j, k);
    if (v == 0) continue;
    for (int64_t o = 0; o < U.cols; ++o) row[(size_t)o] += v * U(k, o);
  }
}

std::vector<double> component_norms(const Mat& V, const Mat& U, int64_t m) {
  const int64_t C = V.cols / m;
  std::vector<double> norm((size_t)C, 0.0), row;
  for (int64_t c = 0; c < C; ++c) {
    double n2 = 0;
    for (int64_t j = 0; j < V.rows; ++j) {
      component_row(V, U, c, m, j, row);
      for (double x : row) n2 += x * x;
    }
    norm[(size_t)c] = std::sqrt(n2);
  }
  return norm;
}

// large[c]: ||P_c||_F > rel * max_c' of the same (and max > 0). m = 1: ||V[:, c]|| ||U[c, :]||.
static std::vector<bool> large_norm_mask(const Mat& V, const Mat& U, double rel, int64_t m) {
  const std::vector<double> norm = component_norms(V, U, m);
  double largest = 0;
  for (double n : norm) largest = std::max(largest, n);
  std::vector<bool> large(norm.size());
  for (size_t c = 0; c < norm.size(); ++c) large[c] = largest > 0 && norm[c] > rel * largest;
  return large;
}

static void check_group(const char* what, const Mat& V, const Mat& U, int64_t m) {
  if (V.cols != U.rows) ad::fail(std::string(what) + ": V [d_in, C] and U [C, d_out] disagree on C");
  if (m < 1 || V.cols % m != 0)
    ad::fail(std::string(what) + ": " + std::to_string(V.cols) + " columns do not split into components of " + std::to_string(m));
}

int64_t large_norm_components(const Mat& V, const Mat& U, double rel, int64_t m) {
  check_group("large_norm_components", V, U, m);
  const std::vector<bool> large = large_norm_mask(V, U, rel, m);
  return (int64_t)std::count(large.begin(), large.end(), true);
}

int64_t dense_k_error(const Mat& ci, int64_t k, std::vector<int64_t>* order) {
  std::vector<int64_t> all((size_t)ci.cols);
  std::iota(all.begin(), all.end(), 0);
  std::vector<int64_t> o = by_mass(ci, all);
  int64_t err = 0;
  for (int64_t r = 0; r < ci.cols; ++r) {
    const int64_t c = o[r];
    if (r < k) {
      bool has = false;
      for (int64_t i = 0; i < ci.rows; ++i) has = has || ci(i, c) >= 0.9;
      err += !has;
    } else {
      for (int64_t i = 0; i < ci.rows; ++i) err += ci(i, c) > 0.1;
    }
  }
  if (k > ci.cols) err += k - ci.cols;  // missing columns of the dense block
  if (order) *order = o;
  return err;
}

BlockCoverage dense_k_block_coverage(const Mat& ci, int64_t k, double threshold) {
  if (k < 1 || ci.rows < 1) ad::fail("dense_k_block_coverage: needs k >= 1 and at least one feature");
  std::vector<int64_t> all((size_t)ci.cols);
  std::iota(all.begin(), all.end(), 0);
  std::vector<int64_t> block = by_mass(ci, all);  // the dense_k_error order
  block.resize((size_t)std::min(k, ci.cols));
  std::vector<int64_t> on((size_t)ci.rows, 0);  // per feature: block columns with CI > threshold
  for (int64_t i = 0; i < ci.rows; ++i)
    for (int64_t c : block) on[(size_t)i] += ci(i, c) > threshold;
  BlockCoverage r;
  r.k = k;
  r.features_using_all = std::count(on.begin(), on.end(), k);
  std::sort(on.begin(), on.end());
  const size_t n = on.size();
  r.min = on.front(), r.max = on.back();
  r.median = n % 2 ? (double)on[n / 2] : 0.5 * (double)(on[n / 2 - 1] + on[n / 2]);
  return r;
}

MMCSResult mmcs_ml2r(const Mat& W, const Mat& V, const Mat& U, double min_rel_norm, int64_t m) {
  const int64_t d_out = W.rows, d_in = W.cols;
  if (V.rows != d_in || U.rows != V.cols || U.cols != d_out)
    ad::fail("mmcs_ml2r: shapes do not match (W [d_out, d_in], V [d_in, C], U [C, d_out])");
  check_group("mmcs_ml2r", V, U, m);
  const int64_t C = V.cols / m;
  const std::vector<bool> candidate = min_rel_norm > 0 ? large_norm_mask(V, U, min_rel_norm, m) : std::vector<bool>(C, true);
  MMCSResult r;
  std::vector<double> pv;
  for (int64_t j = 0; j < d_in; ++j) {
    double wn = 0;
    for (int64_t o = 0; o < d_out; ++o) wn += W(o, j) * W(o, j);
    wn = std::sqrt(wn);
    double best = -2, best_norm = 0;
    int64_t best_c = -1;
    for (int64_t c = 0; c < C; ++c) {
      if (!candidate[(size_t)c]) continue;
      component_row(V, U, c, m, j, pv);  // P_c's column j in W's orientation
      double dot = 0, pn = 0;
      for (int64_t o = 0; o < d_out; ++o) dot += pv[(size_t)o] * W(o, j), pn += pv[(size_t)o] * pv[(size_t)o];
      pn = std::sqrt(pn);
      const double cs = (pn > 0 && wn > 0) ? dot / (pn * wn) : 0;
      if (cs > best) best = cs, best_c = c, best_norm = pn;
    }
    r.cos_per_col.push_back(best_c >= 0 ? best : 0.0);  // no candidate (all-zero components)
    r.ratio_per_col.push_back(wn > 0 ? best_norm / wn : 0);
    r.best_c.push_back(best_c);
  }
  for (size_t j = 0; j < r.cos_per_col.size(); ++j) r.mmcs += r.cos_per_col[j], r.ml2r += r.ratio_per_col[j];
  if (d_in > 0) r.mmcs /= (double)d_in, r.ml2r /= (double)d_in;
  return r;
}

std::string mat_text(const Mat& m, const std::vector<int64_t>& order, int decimals, double blank,
                     const std::string& row_label) {
  if (decimals < 0 || decimals > 12) ad::fail("mat_text: decimals must be in [0, 12]");
  std::vector<int64_t> cols = order;
  if (cols.empty())
    for (int64_t j = 0; j < m.cols; ++j) cols.push_back(j);
  for (int64_t j : cols)
    if (j < 0 || j >= m.cols) ad::fail("mat_text: column " + std::to_string(j) + " is outside the matrix");
  const int width = decimals + 4;  // sign, one integer digit, point, decimals, plus a space
  std::string out;
  char buf[64];
  for (int64_t i = 0; i < m.rows; ++i) {
    if (!row_label.empty()) out += row_label + std::to_string(i) + " |";
    for (int64_t j : cols) {
      const double v = m(i, j);
      if (std::fabs(v) < blank) std::snprintf(buf, sizeof buf, "%*s", width, ".");
      else std::snprintf(buf, sizeof buf, "%*.*f", width, decimals, v);
      out += buf;
    }
    out += "\n";
  }
  return out;
}

}  // namespace decomp
