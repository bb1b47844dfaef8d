// Failure-mode detectors of a finished decomposition (METHODS 4 "Failure modes to detect"),
// each with the figure that decides it and its threshold, so a reader sees how close a run came:
//   ci_collapse     the CI-masked reconstruction loses more than `collapse` of what ablating every
//                   component loses (figure: ci_masked_recon / recon_zero; LM: ce_unrecovered of
//                   the ci_masked strategy), or a layer has no alive component (figure: 1)
//                   -> importance minimality too strong
//   dense           some layer keeps more than `dense` of its C components on per example (figure:
//                   max CI_L0 / C over the layers without a configured dense-k pattern)
//                   -> importance minimality too weak
//   polysemantic    components that serve several things: on one-hot inputs (toys), alive
//                   components on for >= 2 features in layers without a dense-k pattern; for
//                   sequence models, components on for more than `frequent` of all tokens
//                   (figure: their count) -> frequency pressure too low
//   unconverged     the training total still fell by more than `unconverged` (relative) over the
//                   last tenth of training (figure: (L(0.9 T) - L(T)) / L(0.9 T), from the log)
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/train_loop.hpp"

namespace decomp {

class Decomposition;
struct EvalResult;

struct FailureMode {
  std::string name;
  bool triggered = false;
  double figure = 0, threshold = 0;
  bool applicable = true;  // false: the run has nothing to decide it on (e.g. no training log)
  std::string detail;      // what the figure is, in words
};

struct FailureThresholds {
  double collapse = 0.1, dense = 0.5, frequent = 0.5, unconverged = 0.05;
};

std::vector<FailureMode> detect_failure_modes(const Decomposition& dec, const EvalResult& ev, const ad::TrainLog& log,
                                              const FailureThresholds& th = {});
nlohmann::json failure_modes_json(const std::vector<FailureMode>& f);
// One line per mode: "ci_collapse   no   0.0031 (threshold 0.1): ...".
std::string failure_modes_text(const std::vector<FailureMode>& f);

}  // namespace decomp
