// Registry of gradient-audit cases. Each AUDIT_CASE builds float64 inputs and calls
// CHECK_GRADIENTS(f, inputs); "autodiff: gradient audit" (test_gradcheck.cpp) runs them
// all and then fails if any registered op's backward never ran inside a gradcheck.
#pragma once
#include <doctest/doctest.h>

#include <vector>

#include "autodiff/gradcheck.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"

namespace audit {

struct Case {
  const char* name;
  void (*fn)();
};
inline std::vector<Case>& cases() {
  static std::vector<Case> c;
  return c;
}
struct Registration {
  Registration(const char* name, void (*fn)()) { cases().push_back({name, fn}); }
};

// A float64 leaf with entries U[lo, hi), requiring a gradient unless told otherwise.
inline ad::Tensor input(const ad::Shape& s, ad::Rng& rng, double lo = -1, double hi = 1, bool requires_grad = true) {
  ad::Tensor t = ad::rand_uniform(s, lo, hi, rng, ad::DType::f64);
  t.requires_grad_(requires_grad);
  return t;
}

}  // namespace audit

#define AUDIT_CASE_IMPL(fn, name)                                        \
  static void fn();                                                      \
  static ::audit::Registration AD_CONCAT(fn, _reg)(name, fn);            \
  static void fn()
#define AUDIT_CASE(name) AUDIT_CASE_IMPL(AD_CONCAT(audit_case_, __LINE__), name)

// CHECK_GRADIENTS(f, inputs [, options]): gradcheck + doctest CHECKs with the report.
namespace audit {
inline void check_gradients(const ad::GradcheckFn& f, const std::vector<ad::Tensor>& inputs,
                            const ad::GradcheckOptions& opt = ad::GradcheckOptions()) {
  auto r = ad::gradcheck(f, inputs, opt);
  INFO(r.report);
  CHECK(r.ok);
  CHECK(r.coords_checked > 0);
}
}  // namespace audit
#define CHECK_GRADIENTS(...) ::audit::check_gradients(__VA_ARGS__)
