// The benchmark registry (figures only: these tests check the plumbing, not the speed).
#include <doctest/doctest.h>

#include <memory>

#include "autodiff/gemm.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "decomp/ci_ops.hpp"
#include "experiments/bench/bench.hpp"

TEST_CASE("bench: engine workloads are registered and a quick run reports its fields") {
  auto& reg = pd::bench_registry();
  for (const char* name : {"sgemm", "tape_overhead", "mlp_train_step", "memory"}) {
    INFO(name);
    REQUIRE(reg.count(name));
    CHECK(reg.at(name).engine_default);
  }
  pd::BenchOptions opt;
  opt.quick = true;
  opt.min_seconds = 0.01;
  auto lines = pd::run_bench("tape_overhead", opt);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].begin().key() == "bench");  // "bench" comes first in every line
  CHECK(lines[0]["bench"] == "tape_overhead");
  CHECK(lines[0]["fwd_bwd_ns_per_op"].get<double>() > 0);
  CHECK(lines[0]["max_rss_kb"].get<int64_t>() > 0);
  CHECK_THROWS_AS(pd::run_bench("no_such_workload", opt), ad::Error);
}

TEST_CASE("bench: the global operator new counter sees allocations (when compiled in)") {
  const uint64_t before = pd::new_calls();
  auto p = std::make_unique<int>(7);
  if (pd::new_calls_counted()) CHECK(pd::new_calls() >= before + 1);
  else CHECK(pd::new_calls() == 0);
  CHECK(*p == 7);
}

// The engine's promise (issue 2): a repeated training step allocates nothing from the heap
// once warmed up. op_allocs runs every op forward + backward and lists the ones that do.
TEST_CASE("bench: every engine op is heap-allocation-free once warmed up (op_allocs)") {
  pd::BenchOptions opt;
  opt.quick = true;
  opt.min_seconds = 0.005;
  auto lines = pd::run_bench("op_allocs", opt);
  REQUIRE(lines.size() == 1);
  const auto& r = lines[0];
  INFO(r.dump());
  CHECK(r["ops_checked"].get<int>() >= 30);
  CHECK(r["ops_allocating_per_pass"].empty());
  CHECK_FALSE(r.contains("failed"));
}

// op_allocs uses small shapes; big products take the chunked gemm on the thread pool, the
// CI function its chunked kernel. Neither may allocate per call once warmed up.
TEST_CASE("bench: chunked gemm and the chunked CI kernel allocate nothing once warmed up") {
  if (!pd::new_calls_counted()) return;  // counting is off under ASan
  ad::Rng rng(3);
  ad::Tensor x = ad::rand_normal({256, 160}, 0, 1, rng), W = ad::rand_normal({120, 160}, 0, 1, rng);
  ad::Tensor h = ad::rand_normal({512, 40}, 0, 1, rng), W1 = ad::rand_normal({40, 16}, 0, 1, rng),
             b1 = ad::rand_normal({40, 16}, 0, 1, rng), W2 = ad::rand_normal({40, 16}, 0, 1, rng),
             b2 = ad::rand_normal({40}, 0, 1, rng);
  for (ad::Tensor* t : {&x, &W, &h, &W1}) t->requires_grad_(true);
  REQUIRE(ad::gemm_chunks(256, 120, 160) > 1);
  auto step = [&] {
    ad::backward(ad::sum(ad::square(ad::linear(x, W))) + ad::sum(decomp::ci_scalar_mlp(h, W1, b1, W2, b2)));
    for (ad::Tensor* t : {&x, &W, &h, &W1}) t->zero_grad();
  };
  step();
  step();
  const uint64_t before = pd::new_calls();
  for (int i = 0; i < 5; ++i) step();
  CHECK(pd::new_calls() == before);
}
