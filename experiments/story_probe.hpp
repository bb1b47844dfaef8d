// Ground-truth probe of a decomposed language model trained on the built-in story corpus:
// for each grammar feature of models::generate_annotated_stories (hero's gender, plural noun,
// quoted speech, names, places, feelings), the single component over all decomposed layers
// whose CI best predicts the feature's per-character label, by AUROC over the positions where
// the feature is defined.
//
// AUROC is reported as is (not max(AUROC, 1 - AUROC)): CI says a component is needed at a
// position, so "the component for a feature" is one that is on where the feature is; one that
// is off there (AUROC near 0) is not counted as finding it. Two baselines say what chance
// gives when the best of many components is taken: the best AUROC with the labels shuffled
// among the defined positions (same CI), and the best AUROC of an untrained decomposition of
// the same config (seed + 1; its random CI functions read the same layer inputs, so it shows
// how much of a feature is visible in the inputs alone, e.g. a name's capital letter).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiments/decompose_pipeline.hpp"

namespace pd {

struct ProbeOptions {
  int64_t sequences = 64;  // windows of the run's seq_len cut one after another from the text
  uint64_t seed = 4321;    // of the probe's stories (the corpus used 1234)
};

struct ProbeRow {
  std::string feature;
  int64_t defined = 0, positive = 0;  // labelled positions, of which label 1
  std::string layer;                  // best component ("" when the AUROC is undefined)
  int64_t component = -1;
  double auroc = NAN;
  double shuffled_best = NAN;     // best AUROC over all components, labels shuffled
  double random_init_best = NAN;  // best AUROC over an untrained decomposition's components
};

struct ProbeResult {
  int64_t sequences = 0, seq_len = 0, stories = 0, skipped_stories = 0;
  uint64_t seed = 0;
  std::vector<ProbeRow> rows;  // one per models::story_feature_names() entry
};

// Throws, naming `run_name`, when the run's target was not trained on builtin:stories text.
void require_story_corpus(const Run& r, const std::string& run_name);
// The probe (calls require_story_corpus first).
ProbeResult story_probe(const Run& r, const ProbeOptions& opt, const std::string& run_name);

// For each label vector, the component over all layers of `ci` whose CI has the largest AUROC
// against it (the first in layer, component order on ties); layer -1 when no AUROC is defined
// (a class is empty). labels[f] has one entry per position of `ci` (-1: not defined there).
// One sort per component serves every label.
struct BestComponent {
  int64_t layer = -1, component = -1;
  double auroc = NAN;
};
std::vector<BestComponent> best_components(const decomp::SequenceCI& ci, const std::vector<std::vector<int8_t>>& labels);

nlohmann::json probe_json(const ProbeResult& p);
std::string probe_table(const ProbeResult& p);

}  // namespace pd
