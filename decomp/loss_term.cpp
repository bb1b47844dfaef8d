#include "decomp/loss_term.hpp"

#include <cmath>

#include "decomp/apd.hpp"
#include "decomp/masks.hpp"
#include "decomp/spd.hpp"
#include "decomp/vpd.hpp"

namespace decomp {

static std::map<std::string, LossTermKind>& table() {
  static std::map<std::string, LossTermKind> t;
  return t;
}

const std::map<std::string, LossTermKind>& loss_term_table() { return table(); }

LossTermRegistration::LossTermRegistration(const char* kind, int methods, bool monitor,
                                           std::function<std::unique_ptr<LossTerm>()> make) {
  table()[kind] = LossTermKind{kind, methods, monitor, std::move(make)};
}

const SPD& TermContext::spd() const {
  const SPD* s = dynamic_cast<const SPD*>(&dec);
  if (!s) ad::fail(std::string("loss term: needs an SPD decomposition, this is ") + dec.method_name());
  return *s;
}
const APD& TermContext::apd() const {
  const APD* a = dynamic_cast<const APD*>(&dec);
  if (!a) ad::fail(std::string("loss term: needs an APD decomposition, this is ") + dec.method_name());
  return *a;
}

const VPD& TermContext::vpd() const {
  const VPD* v = dynamic_cast<const VPD*>(&dec);
  if (!v) ad::fail(std::string("loss term: needs a VPD decomposition, this is ") + dec.method_name());
  return *v;
}

std::shared_ptr<LossTerm> make_loss_term(const std::string& kind) {
  auto it = table().find(kind);
  if (it == table().end()) {
    std::string known;
    for (auto& kv : table()) known += (known.empty() ? "" : ", ") + kv.first;
    ad::fail("unknown loss term '" + kind + "' (known: " + known + ")");
  }
  std::shared_ptr<LossTerm> t = it->second.make();
  t->kind = t->label = kind;
  return t;
}

Routing read_routing(models::ConfigSection& s, Routing def) {
  if (!s.has("routing")) return def;
  const std::string name = s.get_string("routing");
  try {
    return parse_routing(name);
  } catch (const ad::Error& e) {
    s.error("routing", e.what());
  }
}

std::shared_ptr<LossTerm> parse_loss_term(models::ConfigSection& s) {
  const std::string kind = s.get_string("name");
  std::shared_ptr<LossTerm> t;
  try {
    t = make_loss_term(kind);
  } catch (const ad::Error& e) {
    s.error("name", e.what());
  }
  t->coeff = s.get_double("coeff", 1.0);
  if (!std::isfinite(t->coeff) || t->coeff < 0) s.error("coeff", "must be a finite number >= 0");
  t->label = s.get_string("label", kind);
  if (t->label.empty()) s.error("label", "must not be empty");
  t->read(s);
  s.finish("is not a key of loss term '" + kind + "'");
  return t;
}

}  // namespace decomp
