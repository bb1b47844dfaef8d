// What a decomposition's components are, per layer: components.json (written by pd decompose,
// read by report.html and printed by pd components) and the readable table of pd components.
// The numbers come from analyse_components (experiments/decompose_pipeline.hpp), one place
// for their seeds, so a run's components.json and `pd components` on its folder agree.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "experiments/decompose_pipeline.hpp"

namespace pd {

// components.json's content. Top level: method, ci_threshold, ablation_batch, layers, and for
// sequence targets "contexts" {sequences, seq_len, seed, per_component, before, after}. Per layer:
//   name, norm (||P_c||_F), ci_freq (fraction of evaluation examples, or token positions of a
//   sequence target, with CI > ci_threshold), ci_mean, ablation_effect (null where not measured)
//   targets with one-hot features: onehot_max_ci, serves_features (the features whose largest
//     one-hot CI is this component's, above ci_threshold)
//   sequence targets: top_contexts, per component a list of {seq, pos, ci, before, token, after}
//     (largest CI first; empty when its CI is > 0 nowhere in the context sequences)
nlohmann::json components_json(const decomp::Decomposition& spd, const ComponentAnalysis& a);
// dir/components.json (atomic writer); text that is not valid UTF-8 (a byte-level tokenizer's
// context cut inside a character) is written with U+FFFD in its place.
void write_components_json(const decomp::Decomposition& spd, const ComponentAnalysis& a, const std::string& dir);

struct ComponentTableOptions {
  int64_t top = 10;          // components shown per layer (<= 0: every alive one)
  int64_t contexts = 3;      // contexts shown per component
  bool by_ablation = false;  // sort by ablation effect (largest first) instead of CI frequency
  std::string layer;         // only this layer ("" = all)
};
// Per layer the alive components (ci_freq > 0) sorted as asked: index, CI frequency, mean CI,
// norm, ablation effect, and the top contexts (sequence targets; before[token]after with
// newlines shown as \n) or the served features (one-hot targets). `c` is components_json's
// output (or a components.json read back). Throws naming the layer when opt.layer is not one.
std::string components_table(const nlohmann::json& c, const ComponentTableOptions& opt);

// The layer names of components_json's output, "a, b, c" (for error messages).
std::string layer_list(const nlohmann::json& c);

}  // namespace pd
