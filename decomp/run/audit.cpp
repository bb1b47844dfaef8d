#include "decomp/run/audit.hpp"

#include <cstdarg>
#include <cstdio>

#include "models/config.hpp"
#include "autodiff/gradcheck.hpp"
#include "decomp/run/target.hpp"

namespace decomp {

using nlohmann::json;

static void out_printf(std::ostream& out, const char* fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  out << buf;
}

bool audit_config(const std::string& config_path, int64_t coords, int64_t batch, bool trained, std::ostream& out) {
  const json cfg = models::read_json_file(config_path);
  DecompConfig sc = parse_decomp_config(cfg, config_path);
  // The lower leaky sigmoid's backward is deliberately not a derivative (alpha g for z <= 0
  // when g < 0); with alpha = 0 it is clamp's true derivative, so finite differences apply.
  sc.leaky_alpha = 0.0;
  const LoadedTarget lt = trained ? load_target(cfg, config_path, "", ad::DType::f64, true)
                                  : untrained_target(cfg, config_path, ad::DType::f64);
  ad::Rng rng(sc.seed);
  std::unique_ptr<Decomposition> dec = make_decomposition(lt.target, sc, rng);
  Decomposition& spd = *dec;
  // CI biases start at 0 and sparse data has all-zero inputs, so at initialisation many
  // pre-sigmoid values sit exactly on the hard sigmoids' kink at z = 0, where a central
  // difference averages the two one-sided slopes. Zero-initialised tensors are moved to small
  // random values so the audited point is generic.
  {
    ad::Rng jitter(sc.seed + 11);
    for (ad::Tensor& p : spd.all_params()) {
      bool all_zero = true;
      for (int64_t i = 0; i < p.numel() && all_zero; ++i) all_zero = p.item(i) == 0.0;
      if (all_zero) ad::fill_uniform(p, -0.1, 0.1, jitter);
    }
  }
  ad::Rng data_rng(sc.seed + 7);
  Batch b = lt.target.sample(batch, data_rng);
  std::vector<ad::Tensor> params = spd.all_params();
  std::vector<std::string> names = spd.all_param_names();
  const size_t n_params = params.size();
  // VPD: the persistent sources too (their gradient drives the ascent), held at their current
  // values (outside a training step the sources do not move, so f is a function of them).
  for (auto& s : spd.persistent_state())
    if (s.audited) {
      s.t.requires_grad_(true);
      params.push_back(s.t);
      names.push_back(s.name);
    }
  auto f = [&](const std::vector<ad::Tensor>&) {
    ad::Rng r(4242);  // the same masks in every evaluation
    return spd.total_loss(b, 0.5, r, nullptr, false);
  };
  // The sources enter only the persistent terms; their gradients can be 1e-6 of the total's
  // scale (faithfulness x 100, importance minimality), where the total's central difference
  // is rounding noise. They are audited on the sum of the terms that read them.
  auto f_sources = [&](const std::vector<ad::Tensor>&) {
    ad::Rng r(4242);
    const StepState st = spd.prepare(b, r);
    ad::Tensor sum;
    for (const auto& t : spd.cfg.losses)
      if (t->reads_persistent_state()) {
        ad::Tensor v = spd.term(*t, b, st, 0.5, r) * t->coeff;
        sum = sum.defined() ? sum + v : v;
      }
    return sum;
  };
  out_printf(out, "gradient audit of one %s step (float64, batch %lld, %lld coords per tensor): %s\n", spd.method_name(), (long long)batch,
              (long long)coords, config_path.c_str());
  // A step's gradients are far below gradcheck's absolute atol (1e-5), which then accepts
  // anything, even a zero gradient. Scaled: each tensor is judged against its own largest
  // gradient (as if the loss were divided by it) on coordinates that include its largest
  // ones. atol 1e-4 of the scale sits above the central difference's rounding noise in
  // these losses (at most ~1e-5 of the scale on the shipped configs) and far below the
  // error a 1% wrong backward leaves at the largest coordinate (1e-2 of the scale).
  ad::GradcheckOptions o;
  o.max_coords_per_input = coords;
  o.scaled = true;
  o.atol = 1e-4;
  out_printf(out, "pass: |analytic - numeric| <= %g grad_scale + %g |numeric|, grad_scale = the tensor's max |gradient|; "
             "coordinates: its largest-gradient half, then random nonzero ones\n", o.atol, o.rtol);
  out_printf(out, "%-40s %14s %8s %12s %12s %12s  %s\n", "tensor", "shape", "coords", "grad_scale", "max_abs_err",
             "max_rel_err", "result");
  bool all_ok = true;
  for (size_t i = 0; i < params.size(); ++i) {
    o.seed = 1000 + i;
    ad::GradcheckResult r = i < n_params ? ad::gradcheck(f, {params[i]}, o) : ad::gradcheck(f_sources, {params[i]}, o);
    all_ok = all_ok && r.ok;
    const char* result = r.grad_scale[0] == 0 ? "ZERO-GRAD" : r.ok ? "ok" : "FAIL";
    out_printf(out, "%-40s %14s %8lld %12.3e %12.3e %12.3e  %s\n", names[i].c_str(), params[i].shape().str().c_str(),
               (long long)r.coords_checked, r.grad_scale[0], r.max_abs_err, r.max_rel_err, result);
    if (!r.ok) out_printf(out, "  %s\n", r.report.c_str());
  }
  out_printf(out, "%s\n", all_ok ? "audit passed" : "audit FAILED");
  return all_ok;
}

}  // namespace decomp
