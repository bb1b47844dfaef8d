// `pd audit` must be able to fail (issue 21, F12): a 1% error in one op's backward, or a
// backward that drops a gradient, fails the audit of the shipped TMS and residual MLP configs.
#include <doctest/doctest.h>

#include <sstream>
#include <string>

#include "autodiff/autograd.hpp"
#include "decomp/run/audit.hpp"

namespace {

// Audits `cfg` (fresh target, batch 8) while op `op`'s backward is scaled by `factor`.
bool audit_with_perturbed(const char* cfg, const char* op, double factor, int64_t coords, std::string& out) {
  std::ostringstream os;
  ad::set_backward_perturbation(op, factor);
  bool ok = false;
  try {
    ok = decomp::audit_config(cfg, coords, 8, false, os);
  } catch (...) {
    ad::set_backward_perturbation(nullptr, 1);
    throw;
  }
  ad::set_backward_perturbation(nullptr, 1);
  out = os.str();
  return ok;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("pd audit: a 1% error in one backward fails it on the TMS and residual MLP configs (SPD and APD)") {
  // matmul carries most of every tensor's gradient in both methods. One coordinate per
  // tensor (its largest-gradient one) keeps the large APD residual MLP fast.
  // The audit checks the total loss, so a 1% error in an op whose paths carry under about a
  // tenth of a tensor's gradient goes unseen (in APD TMS 5-2: relu, mse_loss, pow).
  for (const char* cfg : {"experiments/configs/spd_tms_5-2.json", "experiments/configs/spd_resid_mlp1.json",
                          "experiments/configs/apd_tms_5-2.json", "experiments/configs/apd_resid_mlp1.json"}) {
    CAPTURE(cfg);
    std::string out;
    CHECK_MESSAGE(audit_with_perturbed(cfg, "matmul", 1.01, 1, out) == false, out);
    CHECK_MESSAGE(has(out, "audit FAILED"), out);
    CHECK_MESSAGE(has(out, "grad_scale"), out);
    CHECK_MESSAGE(has(out, "  FAIL\n"), out);
  }
  // SPD's fused ops: the masked component pass, and the CI function (which only the CI
  // parameters see).
  for (const char* cfg : {"experiments/configs/spd_tms_5-2.json", "experiments/configs/spd_resid_mlp1.json"}) {
    CAPTURE(cfg);
    std::string out;
    CHECK_MESSAGE(audit_with_perturbed(cfg, "masked_component_acts", 1.01, 2, out) == false, out);
    CHECK_MESSAGE(audit_with_perturbed(cfg, "ci_scalar_mlp", 1.01, 2, out) == false, out);
    CHECK_MESSAGE((has(out, "input 0 [20, 16] coord ") || has(out, "input 0 [100, 16] coord ")), out);
  }
}

TEST_CASE("pd audit: a backward that drops a tensor's gradient is reported as ZERO-GRAD and fails") {
  std::string out;
  CHECK_FALSE(audit_with_perturbed("experiments/configs/spd_tms_5-2.json", "ci_scalar_mlp", 0.0, 2, out));
  CHECK_MESSAGE(has(out, "ci.linear1.W1"), out);
  CHECK_MESSAGE(has(out, "ZERO-GRAD"), out);
  CHECK_MESSAGE(has(out, "the analytic gradient is zero everywhere"), out);
  CHECK_MESSAGE(has(out, "audit FAILED"), out);
}
