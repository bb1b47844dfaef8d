#include "experiments/bounds/embedding.hpp"

#include <algorithm>

namespace pd::bounds {

const char* packing_name(Packing p) { return p == Packing::Balanced ? "balanced" : "random"; }

Packing parse_packing(const std::string& name) {
  if (name == "balanced") return Packing::Balanced;
  if (name == "random") return Packing::Random;
  ad::fail("packing: '" + name + "' is not one of balanced, random");
}

double packing_limit(int K, int S) { return static_cast<double>(K) * (K - 1) / (static_cast<double>(S) * (S - 1)); }

Embedding build_embedding(int K, int T, int S, Rng& rng, Packing packing) {
  if (K <= 0 || T <= 0 || S <= 1 || S > K)
    ad::fail("build_embedding: need K > 0, T > 0, 1 < S <= K (got K=" + std::to_string(K) +
             " T=" + std::to_string(T) + " S=" + std::to_string(S) + ")");
  Embedding E;
  E.K = K;
  E.S = S;
  E.rows.reserve(T);
  std::vector<char> linked(static_cast<size_t>(K) * K, 0);  // pair (n, m) already inside some circuit
  std::vector<int> usage(K, 0);
  std::vector<int> order(K);
  std::vector<std::uint64_t> key(K);
  for (int t = 0; t < T; ++t) {
    std::vector<int> chosen;
    for (int attempt = 0; attempt < 8 && static_cast<int>(chosen.size()) < S; ++attempt) {
      chosen.clear();
      // Random keys break ties differently per attempt; Balanced sorts by usage first.
      for (int n = 0; n < K; ++n) order[n] = n, key[n] = rng.next_u64();
      std::sort(order.begin(), order.end(), [&](int a, int b) {
        if (packing == Packing::Balanced && usage[a] != usage[b]) return usage[a] < usage[b];
        return key[a] < key[b];
      });
      for (int n : order) {
        bool ok = true;
        for (int m : chosen)
          if (linked[static_cast<size_t>(n) * K + m]) { ok = false; break; }
        if (ok) chosen.push_back(n);
        if (static_cast<int>(chosen.size()) == S) break;
      }
    }
    if (static_cast<int>(chosen.size()) < S)
      throw PackingError("build_embedding: " + std::string(packing_name(packing)) + " packing failed at circuit " +
                         std::to_string(t) + " of T=" + std::to_string(T) + " (K=" + std::to_string(K) +
                         ", S=" + std::to_string(S) + ", packing limit " + std::to_string(packing_limit(K, S)) + ")");
    std::sort(chosen.begin(), chosen.end());
    for (int n : chosen) {
      ++usage[n];
      for (int m : chosen) linked[static_cast<size_t>(n) * K + m] = 1;
    }
    E.rows.push_back(std::move(chosen));
  }
  return E;
}

double measured_delta(const Embedding& E) {
  // Rows share at most one position, so sum over pairs of |E_t ∩ E_u|^2 = sum over pairs of
  // |E_t ∩ E_u| = sum_n C(usage_n, 2).
  std::vector<long> usage(E.K, 0);
  for (const auto& row : E.rows)
    for (int n : row) ++usage[n];
  double shared = 0.0;
  for (long u : usage) shared += 0.5 * u * (u - 1.0);
  const double pairs = 0.5 * E.T() * (E.T() - 1.0);
  return pairs > 0 ? shared / (pairs * E.S * E.S) : 0.0;
}

Embedding permute_rows(const Embedding& E, Rng& rng) {
  Embedding P;
  P.K = E.K;
  P.S = E.S;
  P.rows.reserve(E.rows.size());
  for (int64_t src : rng.permutation(E.T())) P.rows.push_back(E.rows[static_cast<size_t>(src)]);
  return P;
}

// U = sum over t < u of the linked entries between E_out[t] (outputs) and E_in[u] (inputs),
// in O(T S K): g[m] accumulates, for every input position m, how many (t' < u, n in E_out[t'])
// pairs link to m.
static long count_unwanted_linked(const std::vector<char>& linked, const Embedding& E_out, const Embedding& E_in) {
  const int K = E_out.K;
  std::vector<long> g(K, 0);
  long U = 0;
  for (int u = 0; u < E_out.T(); ++u) {
    for (int m : E_in.rows[u]) U += g[m];
    for (int n : E_out.rows[u]) {
      const char* row = &linked[static_cast<size_t>(n) * K];
      for (int m = 0; m < K; ++m) g[m] += row[m];
    }
  }
  return U;
}

LinkMatrix build_link(const Embedding& E_out, const Embedding& E_in, LinkCorrection correction) {
  if (E_out.K != E_in.K || E_out.S != E_in.S || E_out.T() != E_in.T())
    ad::fail("build_link: the two embeddings differ in K, S or T");
  const int K = E_out.K;
  LinkMatrix c;
  c.K = K;
  const size_t KK = static_cast<size_t>(K) * K;
  std::vector<char> linked(KK, 0);
  for (int t = 0; t < E_out.T(); ++t)
    for (int n : E_out.rows[t])
      for (int m : E_in.rows[t]) linked[static_cast<size_t>(n) * K + m] = 1;
  c.n_linked = std::count(linked.begin(), linked.end(), 1);
  if (correction == LinkCorrection::AllEntries) {
    const long n_all = static_cast<long>(KK);
    // All pairs linked (e.g. one circuit covering every position): nothing to correct.
    c.correction = n_all > c.n_linked ? static_cast<double>(c.n_linked) / static_cast<double>(n_all - c.n_linked) : 0.0;
  } else {
    const long T = E_out.T(), S = E_out.S;
    c.unwanted_linked = count_unwanted_linked(linked, E_out, E_in);
    c.unwanted_total = S * S * T * (T - 1) / 2;
    // No circuit pairs (T = 1) or all of their entries linked: nothing to correct.
    c.correction = c.unwanted_total > c.unwanted_linked
                       ? static_cast<double>(c.unwanted_linked) / static_cast<double>(c.unwanted_total - c.unwanted_linked)
                       : 0.0;
  }
  c.C.resize(KK);
  for (size_t k = 0; k < KK; ++k) c.C[k] = linked[k] ? 1.0 : -c.correction;
  return c;
}

double mean_unwanted_coupling(const LinkMatrix& C, const Embedding& E_out, const Embedding& E_in) {
  double sum = 0.0;
  long count = 0;
  for (int t = 0; t < E_out.T(); ++t)
    for (int u = t + 1; u < E_out.T(); ++u)
      for (int n : E_out.rows[t])
        for (int m : E_in.rows[u]) sum += C.C[static_cast<size_t>(n) * C.K + m], ++count;
  return count > 0 ? sum / static_cast<double>(count) : 0.0;
}

}  // namespace pd::bounds
