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
