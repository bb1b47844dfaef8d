// Where the T small circuits sit in the large network, and how the shared ("mean") weights
// couple positions: the embedding E in {0,1}^{T x K} and the link matrix between the embeddings
// of two consecutive layers (METHODS.md section 6, circuits in superposition).
//
// Layout: D large neurons per layer in d blocks of K = D/d. Circuit t owns the S positions of
// row t of E in every block, so each small neuron has exactly S copies.
#pragma once
#include <string>
#include <vector>

#include "autodiff/error.hpp"
#include "experiments/bounds/rng.hpp"

namespace pd::bounds {

// E stored as the S positions of each row (sorted).
struct Embedding {
  int K = 0, S = 0;
  std::vector<std::vector<int>> rows;  // [T][S]
  int T() const { return static_cast<int>(rows.size()); }
};

// build_embedding could not place every circuit: T too close to the packing limit.
struct PackingError : ad::Error {
  using ad::Error::Error;
};

// How build_embedding picks each circuit's positions (METHODS.md only asks for S ones per row and
// rows sharing at most one position).
//   Balanced: the S least-used positions that keep the rows' overlaps <= 1 (random tie-break), so
//             every position is used ~T S / K times, which delta = d/D - 1/(S T) assumes.
//   Random:   first fit in a fresh random order of positions, usage left to chance.
enum class Packing { Balanced, Random };
const char* packing_name(Packing p);
Packing parse_packing(const std::string& name);  // throws ad::Error naming the value

// Throws PackingError if a circuit cannot be placed (T too close to the packing limit
// K(K-1)/(S(S-1))), ad::Error on bad arguments.
Embedding build_embedding(int K, int T, int S, Rng& rng, Packing packing = Packing::Balanced);
// Largest possible T for (K, S): K(K-1)/(S(S-1)).
double packing_limit(int K, int S);
// Measured mean over circuit pairs of (|E_t ∩ E_u| / S)^2 — what delta = d/D - 1/(S T) predicts.
double measured_delta(const Embedding& E);
// E with its rows (circuits) in a uniformly random order: circuit t of the result sits where
// circuit perm[t] sat in E.
Embedding permute_rows(const Embedding& E, Rng& rng);

// The link matrix C [K_out, K_in] that carries the mean weights from the positions of layer l-1
// (embedding E_in) to those of layer l (E_out): C[n, m] = 1 if some circuit t has n in E_out[t]
// and m in E_in[t], else -correction, with the correction chosen so that a stated mean of
// unwanted couplings is zero:
//   AllEntries   (chi):   the mean over all K x K entries (the fixed-embedding construction);
//   CircuitPairs (kappa): the mean over the S^2 entries that connect circuit u's inputs to circuit
//                         t's outputs, over all circuit pairs t < u (the published construction:
//                         kappa = U / (P - U), U = linked entries among those, P = S^2 T (T-1)/2).
enum class LinkCorrection { AllEntries, CircuitPairs };
struct LinkMatrix {
  int K = 0;
  std::vector<double> C;      // [K, K] row-major, row = output position n, column = input m
  double correction = 0.0;    // chi or kappa: the value unlinked entries get, negated
  long n_linked = 0;          // entries equal to 1
  long unwanted_linked = 0;   // U (CircuitPairs only): linked entries between different circuits
  long unwanted_total = 0;    // P (CircuitPairs only)
};
LinkMatrix build_link(const Embedding& E_out, const Embedding& E_in, LinkCorrection correction);
// Mean of C over the entries connecting circuit u's input positions to circuit t's output
// positions, over the pairs t < u (what CircuitPairs makes zero). O(T^2 S^2): for tests.
double mean_unwanted_coupling(const LinkMatrix& C, const Embedding& E_out, const Embedding& E_in);

}  // namespace pd::bounds
