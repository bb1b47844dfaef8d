// PersistentPGDRecon (METHODS 4, the VPD training default): D(f(x | m), f(x)) under masks
// m = g + (1 - g) s whose sources s persist across training steps and ascend D with Adam
// (decomp/vpd.hpp holds the sources and the update rule). persistent_pgd_recon masks every
// layer; persistent_pgd_recon_subset routes a uniform-k subset per example.
#include <cmath>

#include "decomp/loss_term.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/vpd.hpp"

namespace decomp {

using ad::Tensor;

void PersistentPgdReconTerm::read(models::ConfigSection& s) {
  if (!(coeff > 0)) s.error("coeff", "must be > 0: persistent sources learn only from the training loss");
  p.routing = read_routing(s, p.routing);
  if (p.routing == Routing::layerwise) s.error("routing", "persistent PGD terms take routing all, uniform_k or static_p");
  p.route_p = s.get_double("route_p", p.route_p);
  if (!(p.route_p >= 0 && p.route_p <= 1)) s.error("route_p", "must be in [0, 1]");
  p.scope = s.get_string("pgd_scope", p.scope);
  if (p.scope != "shared" && p.scope != "per_position" && p.scope != "repeat" && p.scope != "per_example")
    s.error("pgd_scope", "must be shared, per_position, repeat or per_example, got '" + p.scope + "'");
  p.n_sources = s.get_int("pgd_sources", p.n_sources);
  if (p.n_sources < 1) s.error("pgd_sources", "must be >= 1");
  if (s.has("pgd_sources") && p.scope != "repeat") s.error("pgd_sources", "applies to pgd_scope repeat only");
  p.inner_steps = (int)s.get_int("pgd_inner_steps", p.inner_steps);
  if (p.inner_steps < 0 || p.inner_steps > 1000) s.error("pgd_inner_steps", "must be in [0, 1000]");
  p.init = s.get_string("pgd_init", p.init);
  if (p.init != "uniform" && p.init != "ones" && p.init != "zeros")
    s.error("pgd_init", "must be uniform, ones or zeros, got '" + p.init + "'");
  auto positive = [&](const char* key, double& v, bool below_one) {
    v = s.get_double(key, v);
    if (!(v > 0) || !std::isfinite(v) || (below_one && !(v < 1)))
      s.error(key, below_one ? "must be in (0, 1)" : "must be a finite number > 0");
  };
  positive("pgd_lr", p.lr, false);
  positive("pgd_beta1", p.beta1, true);
  positive("pgd_beta2", p.beta2, true);
  positive("pgd_eps", p.eps, false);
  p.warmup = s.get_double("pgd_warmup", p.warmup);
  if (!(p.warmup >= 0 && p.warmup <= 1)) s.error("pgd_warmup", "must be a fraction of training in [0, 1]");
  p.start_frac = s.get_double("start_frac", p.start_frac);
  if (!(p.start_frac >= 0 && p.start_frac <= 1)) s.error("start_frac", "must be in [0, 1]");
}

nlohmann::json PersistentPgdReconTerm::params() const {
  return {{"routing", routing_name(p.routing)}, {"route_p", p.route_p},     {"pgd_scope", p.scope},
          {"pgd_sources", p.n_sources},        {"pgd_inner_steps", p.inner_steps}, {"pgd_init", p.init},
          {"pgd_lr", p.lr},                    {"pgd_warmup", p.warmup},    {"pgd_beta1", p.beta1},
          {"pgd_beta2", p.beta2},              {"pgd_eps", p.eps},          {"start_frac", p.start_frac}};
}

Tensor PersistentPgdReconTerm::value(const TermContext& c) const {
  return c.vpd().persistent_pgd_recon(label, c.batch, c.st, c.frac, c.rng);
}

namespace {
std::unique_ptr<LossTerm> make_term(Routing r) {
  auto t = std::make_unique<PersistentPgdReconTerm>();
  t->p.routing = r;
  return t;
}
}  // namespace

PD_LOSS_TERM(persistent_pgd_recon, kVPD, false, [] { return make_term(Routing::all); });
PD_LOSS_TERM(persistent_pgd_recon_subset, kVPD, false, [] { return make_term(Routing::uniform_k); });

}  // namespace decomp
