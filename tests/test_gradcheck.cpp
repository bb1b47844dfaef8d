// Runs every registered audit case, then checks that every op has been audited.
#include <algorithm>
#include <string>

#include "tests/audit.hpp"

TEST_CASE("autodiff: gradient audit of every op (finite differences, float64)") {
  for (const auto& c : audit::cases()) {
    INFO("audit case: " << std::string(c.name));
    c.fn();
  }
  std::string missing;
  for (const std::string& op : ad::registered_ops())
    if (!ad::audited_ops().count(op)) missing += op + " ";
  INFO("ops without an audit case: " << missing);
  CHECK(missing.empty());
  CHECK(audit::cases().size() >= 9);  // the registry itself works
}

TEST_CASE("autodiff: gradcheck itself catches a wrong backward") {
  // A deliberately wrong op built from make_result: forward 2x, backward claims 3.
  struct Wrong {
    static void bw(ad::Node& o) {
      double* g = ad::grad_of<double>(o.inputs[0]);
      const double* up = static_cast<const double*>(o.scratch);
      for (int64_t i = 0; i < o.shape.numel(); ++i) g[i] += 3 * up[i];
    }
  };
  ad::Rng rng(1);
  ad::Tensor x = audit::input({3, 2}, rng);
  auto f = [](const std::vector<ad::Tensor>& in) {
    ad::Tensor y = ad::make_result("wrong_double", in[0].shape(), in[0].dtype(), {in[0]}, Wrong::bw);
    for (int64_t i = 0; i < y.numel(); ++i) y.set_item(i, 2 * in[0].item(i));
    return y;
  };
  auto r = ad::gradcheck(f, {x});
  CHECK_FALSE(r.ok);
  // ...and an op that overwrites instead of accumulating is caught by the sentinel.
  struct Overwrite {
    static void bw(ad::Node& o) {
      double* g = ad::grad_of<double>(o.inputs[0]);
      const double* up = static_cast<const double*>(o.scratch);
      for (int64_t i = 0; i < o.shape.numel(); ++i) g[i] = 2 * up[i];
    }
  };
  auto f2 = [](const std::vector<ad::Tensor>& in) {
    ad::Tensor y = ad::make_result("overwrite_double", in[0].shape(), in[0].dtype(), {in[0]}, Overwrite::bw);
    for (int64_t i = 0; i < y.numel(); ++i) y.set_item(i, 2 * in[0].item(i));
    return y;
  };
  CHECK_FALSE(ad::gradcheck(f2, {x}).ok);
}

namespace {
// y = w (.) x, an op whose backward is wrong by 1% at one coordinate (`bad`), for the tests of
// gradcheck's coordinate sampling.
struct Weighted {
  static std::vector<double> w;
  static int64_t bad;
  static void bw(ad::Node& o) {
    double* g = ad::grad_of<double>(o.inputs[0]);
    const double* up = static_cast<const double*>(o.scratch);
    for (int64_t i = 0; i < o.shape.numel(); ++i) g[i] += (i == bad ? 1.01 : 1.0) * w[(size_t)i] * up[i];
  }
  static ad::Tensor apply(const std::vector<ad::Tensor>& in) {
    ad::Tensor y = ad::make_result("weighted_wrong_at_one", in[0].shape(), in[0].dtype(), {in[0]}, bw);
    for (int64_t i = 0; i < y.numel(); ++i) y.set_item(i, w[(size_t)i] * in[0].item(i));
    return y;
  }
};
std::vector<double> Weighted::w;
int64_t Weighted::bad = -1;
}  // namespace

// Issue 21 F12: with absolute tolerances a loss whose gradients are far below atol passes
// whatever its backward computes. Scaled mode judges each input against its own gradient.
TEST_CASE("gradcheck scaled: a 1% wrong backward of a tiny loss fails, an all-zero gradient is reported") {
  ad::Rng rng(3);
  ad::Tensor x = audit::input({4, 5}, rng);
  auto tiny = [](const std::vector<ad::Tensor>& in) { return ad::mul_scalar(ad::square(in[0]), 1e-9); };
  ad::GradcheckOptions scaled;
  scaled.scaled = true;
  ad::GradcheckResult r = ad::gradcheck(tiny, {x}, scaled);
  CHECK_MESSAGE(r.ok, r.report);
  CHECK(r.grad_scale.at(0) > 1e-10);
  CHECK(r.grad_scale.at(0) < 1e-8);
  CHECK(r.nonzero_grad.at(0) == 20);
  ad::set_backward_perturbation("square", 1.01);
  const bool absolute_ok = ad::gradcheck(tiny, {x}).ok;
  r = ad::gradcheck(tiny, {x}, scaled);
  ad::set_backward_perturbation(nullptr, 1);
  CHECK(absolute_ok);  // the vacuous pass scaled mode exists for
  CHECK_FALSE(r.ok);
  CHECK_MESSAGE(r.report.find("input 0 [4, 5] coord ") != std::string::npos, r.report);

  // A gradient that is zero everywhere: nothing was checked, which is not a pass.
  auto zero = [](const std::vector<ad::Tensor>& in) { return ad::mul_scalar(in[0], 0.0); };
  CHECK(ad::gradcheck(zero, {x}).ok);
  r = ad::gradcheck(zero, {x}, scaled);
  CHECK_FALSE(r.ok);
  CHECK(r.grad_scale.at(0) == 0);
  CHECK_MESSAGE(r.report.find("input 0 [4, 5]: the analytic gradient is zero everywhere") != std::string::npos, r.report);
}

TEST_CASE("gradcheck scaled: a sample holds the largest-gradient coordinates and only nonzero ones while there are enough") {
  ad::Rng rng(4);
  ad::Tensor x = audit::input({1000}, rng);
  ad::GradcheckOptions o;
  o.scaled = true;
  // 1000 coordinates of weight 1 and one of weight 1000, wrong there: a sample of 2 holds it.
  Weighted::w.assign(1000, 1.0);
  Weighted::w[617] = 1000;
  Weighted::bad = 617;
  o.max_coords_per_input = 2;
  ad::GradcheckResult r = ad::gradcheck(Weighted::apply, {x}, o);
  CHECK_FALSE(r.ok);
  CHECK_MESSAGE(r.report.find("coord 617:") != std::string::npos, r.report);
  // Three nonzero coordinates among 1000, wrong at the one of weight 1: a sample of 3 takes
  // the two largest, then the nonzero coordinate left rather than any of the 997 zeros.
  Weighted::w.assign(1000, 0.0);
  Weighted::w[10] = 50, Weighted::w[20] = 30, Weighted::w[30] = 1;
  Weighted::bad = 30;
  o.max_coords_per_input = 3;
  r = ad::gradcheck(Weighted::apply, {x}, o);
  CHECK(r.nonzero_grad.at(0) == 3);
  CHECK(r.coords_checked == 3);
  CHECK_FALSE(r.ok);
  CHECK_MESSAGE(r.report.find("coord 30:") != std::string::npos, r.report);
  Weighted::bad = -1;  // the right backward passes on the same samples
  CHECK(ad::gradcheck(Weighted::apply, {x}, o).ok);
}
