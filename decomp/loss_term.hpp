// Loss terms as a table. A term kind ("stochastic_recon", "faithfulness", ...) is a struct
// holding the term's own parameters (read from its config entry) and a function computing its
// value; each kind registers itself once, in its own file under decomp/losses/, with
//
//   PD_LOSS_TERM(stochastic_recon, kSPD, /*monitor=*/true, [] { return std::make_unique<StochasticReconTerm>(); });
//
// where the second argument says which methods the term serves (kSPD, kAPD, kVPD, or kCI for
// the methods with causal-importance functions: SPD and VPD).
//
// Training (SPD::total_loss) and evaluation (decomp/evaluate) both read this table: training
// sums coeff * value over the configured terms; evaluation reports every configured term
// under its label, and every monitor kind that is not configured, with default parameters.
// Adding a term is its file: parameter struct, value function, one registration.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "models/config.hpp"

namespace decomp {

class Decomposition;
class SPD;
class APD;
class VPD;
struct Batch;
struct StepState;

// Bits of the methods a term serves (decomp::Method values).
inline constexpr int kSPD = 1, kAPD = 2, kVPD = 4;
// VPD keeps SPD's parametrisation, CI functions and masks, so every SPD term serves it too.
inline constexpr int kCI = kSPD | kVPD;

// What a term sees at one step: the decomposition, the batch, the step's cached target pass
// and the method's per-step values, the training fraction t / T (for annealed parameters)
// and the step's rng.
struct TermContext {
  const Decomposition& dec;
  const Batch& batch;
  const StepState& st;
  double frac;
  ad::Rng& rng;
  // The decomposition as its method (the table only pairs a term with its methods).
  const SPD& spd() const;
  const APD& apd() const;
  const VPD& vpd() const;
};

struct LossTerm {
  std::string kind;   // the table's key
  std::string label;  // unique per config: metrics and logs use it (default: the kind)
  double coeff = 1.0; // 0: a monitor only (evaluated at log steps and in evaluation, no gradient)
  virtual ~LossTerm() = default;
  // Reads the term's own keys (everything but name, label, coeff); validates them.
  virtual void read(models::ConfigSection&) {}
  // The term's parameters as read (for metrics, reports and tests).
  virtual nlohmann::json params() const { return nlohmann::json::object(); }
  virtual ad::Tensor value(const TermContext& c) const = 0;
  // True for a term that reads the decomposition's persistent state (VPD's adversarial
  // sources): `pd audit` checks those tensors' gradients on such terms alone.
  virtual bool reads_persistent_state() const { return false; }
};

struct LossTermKind {
  std::string kind;
  int methods = 0;       // bits of kSPD, kAPD, kVPD
  bool monitor = false;  // reported by every evaluation of its methods, configured or not
  std::function<std::unique_ptr<LossTerm>()> make;
};

// Every registered kind, by name.
const std::map<std::string, LossTermKind>& loss_term_table();
// A term of this kind with default parameters (throws on an unknown kind, listing the known).
std::shared_ptr<LossTerm> make_loss_term(const std::string& kind);
// One entry of a config's "losses" list: {"name": kind, "coeff", "label", ...term keys}.
std::shared_ptr<LossTerm> parse_loss_term(models::ConfigSection& s);

// A term's "routing" key (absent: `def`), with the key named in the error.
enum class Routing : int;
Routing read_routing(models::ConfigSection& s, Routing def);

struct LossTermRegistration {
  LossTermRegistration(const char* kind, int methods, bool monitor, std::function<std::unique_ptr<LossTerm>()> make);
};

}  // namespace decomp

#define PD_LOSS_TERM(kind, methods, monitor, make) \
  static ::decomp::LossTermRegistration pd_loss_term_registration_##kind(#kind, methods, monitor, make)
