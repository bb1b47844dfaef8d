// What a decomposition's components do on sequences, beyond evaluate()'s per-component
// frequencies: the positions where a component's CI is largest (top-activating contexts, shown
// as the text around them) and how well a component's CI separates a labelled property of
// positions (AUROC). Both read "CI" as evaluate() does: StepState::g_lower (SPD's lower-leaky
// causal importance; APD's top-k mask).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "decomp/decomposition.hpp"

namespace decomp {

// ---- AUROC -----------------------------------------------------------------------------------
// Area under the ROC curve of `score` as a predictor of `label` (1 positive, 0 negative, any
// negative value: position skipped): the probability that a random positive scores above a
// random negative, a tie counting one half. Exact: the Mann-Whitney U statistic over
// n_pos n_neg, from ranks with tied scores given their average rank. NaN when either class is
// empty. 1: the score ranks every positive first; 0: every negative first; 0.5: no relation.
double auroc(const std::vector<float>& score, const std::vector<int8_t>& label);
// The same, given the positions of score in ascending order (ascending_order(score)), so that
// several labels can share one sort.
double auroc_sorted(const float* score, const std::vector<int64_t>& ascending, const std::vector<int8_t>& label);
// Positions 0..n-1 sorted by score ascending (stable: ties keep position order).
std::vector<int64_t> ascending_order(const float* score, int64_t n);

// ---- CI on sequences ---------------------------------------------------------------------------
// CI of every decomposed layer on n_seq sequences of seq_len tokens, component-major:
// ci[l][c * positions + p] with p = seq * seq_len + t (positions = n_seq seq_len).
struct SequenceCI {
  int64_t n_seq = 0, seq_len = 0;
  std::vector<int64_t> C;                 // per layer: components (SPD's C; APD's C)
  std::vector<std::vector<float>> ci;     // per layer [C][positions]
  std::vector<std::vector<float>> z;      // with keep_z, SPD: the pre-sigmoid z, same layout
  int64_t positions() const { return n_seq * seq_len; }
  const float* component(size_t l, int64_t c) const { return ci[l].data() + c * positions(); }
  const float* component_z(size_t l, int64_t c) const { return z.empty() ? nullptr : z[l].data() + c * positions(); }
};
// ids: [n_seq, seq_len] token ids, run through spd.prepare in chunks of `chunk` sequences.
// `rng` only feeds prepare (SPD's CI is deterministic; nothing is drawn for g_lower). keep_z
// also keeps SPD's pre-sigmoid z (APD has none: z stays empty).
SequenceCI sequence_ci(const Decomposition& spd, const std::vector<int32_t>& ids, int64_t n_seq, int64_t seq_len,
                       ad::Rng& rng, int64_t chunk = 32, bool keep_z = false);

// ---- top-activating contexts ---------------------------------------------------------------------
// One position of one sequence and the text around it.
struct Context {
  int64_t seq = 0, pos = 0;
  double ci = 0;
  double z = NAN;  // SPD's pre-sigmoid CI there (orders positions where CI saturates at 1)
  std::string before, token, after;  // decoded; token ids as numbers when there is no tokenizer
};

struct ContextOptions {
  int64_t sequences = 64;  // evaluation sequences drawn from the target's sampler
  int64_t per_component = 5;
  int64_t before = 24, after = 4;  // tokens shown around the position (cut at the sequence's ends)
};

struct TopContexts {
  ContextOptions opt;
  uint64_t seed = 0;
  int64_t seq_len = 0;
  // Per layer and component: the up to opt.per_component sequences in which its CI is
  // largest, each at its own largest position (one per sequence, so the contexts are different
  // passages; a later one whose shown text repeats an earlier one's is skipped too), largest
  // first. Order: CI, then z (CI saturates at 1 on many positions), then earlier sequence.
  // Only positions with CI > 0; empty for a component with CI > 0 nowhere.
  std::vector<std::vector<std::vector<Context>>> layers;
};

// Top-activating contexts on opt.sequences sequences drawn by spd.target.sample from
// Rng(seed). Throws for a target without token sequences (a toy model's feature vectors).
TopContexts top_contexts(const Decomposition& spd, const ContextOptions& opt, uint64_t seed);

// Per sequence of a component's CI [n_seq, seq_len], the position of its largest CI (ties:
// larger z when z is given, then the earlier position); -1 where CI > 0 nowhere.
std::vector<int64_t> best_per_sequence(const float* ci, const float* z, int64_t n_seq, int64_t seq_len);

// Tokens [pos - before, pos) / pos / (pos, pos + after] of one sequence, decoded with the
// tokenizer (null: ids as numbers separated by spaces).
Context context_at(const models::Tokenizer* tok, const int32_t* seq, int64_t seq_len, int64_t pos, int64_t before,
                   int64_t after);

// before[token]after on one line: newline, tab and carriage return shown as \n, \t, \r.
std::string show_context(const Context& c);

}  // namespace decomp
