// Tape behaviour: order, accumulation, grad(), retain_graph, no-grad, NaN guard, memory.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autodiff/gemm.hpp"
#include "autodiff/parallel.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"

using ad::Shape;
using ad::Tensor;

TEST_CASE("autodiff: 100,000-node chain runs backward and frees without recursion") {
  Tensor x = ad::full({3}, 1.0, ad::DType::f64);
  x.requires_grad_();
  {
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = ad::mul_scalar(y, 1.0 + 1e-6);
    ad::backward(ad::sum(y));
  }  // the chain is released here, iteratively
  CHECK(x.grad().item(0) == doctest::Approx(std::pow(1.0 + 1e-6, 100000)).epsilon(1e-9));
}

TEST_CASE("autodiff: gradients accumulate across backward calls") {
  Tensor x = ad::from_vector({1, 2, 3}, {3}, ad::DType::f64);
  x.requires_grad_();
  ad::backward(ad::sum(ad::square(x)));
  ad::backward(ad::sum(ad::square(x)));
  CHECK(x.grad().item(2) == doctest::Approx(12.0));  // 2 * (2 * 3)
  x.zero_grad();
  CHECK(x.grad().item(2) == 0.0);
}

TEST_CASE("autodiff: grad() w.r.t. intermediates leaves .grad untouched; retain_graph") {
  Tensor x = ad::from_vector({0.5, -1.0}, {2}, ad::DType::f64);
  x.requires_grad_();
  Tensor h = ad::mul_scalar(x, 3.0);     // h = 3x
  Tensor y = ad::sum(ad::square(h));     // y = sum h^2
  auto g = ad::grad(y, {h, x});          // dy/dh = 2h, dy/dx = 18x
  CHECK(g[0].item(0) == doctest::Approx(3.0));
  CHECK(g[1].item(1) == doctest::Approx(-18.0));
  CHECK_FALSE(x.grad().defined());
  auto g2 = ad::grad(y, {x});            // the graph was retained: a second pass works
  CHECK(g2[0].item(0) == doctest::Approx(9.0));
  ad::backward(y);                       // frees the graph
  CHECK_THROWS_AS(ad::backward(y), ad::Error);
}

namespace {
std::vector<std::string> g_seen_ops;
void record_op(const char* op) { g_seen_ops.push_back(op); }
}  // namespace

TEST_CASE("autodiff: grad() runs only the backwards a requested input is reachable through") {
  Tensor x = ad::from_vector({0.5, -1.0, 2.0}, {3}, ad::DType::f64);
  Tensor W = ad::from_vector({0.3, 0.1}, {2}, ad::DType::f64);
  x.requires_grad_(), W.requires_grad_();
  // y = sum(tanh(x)^2) + sum(exp(W)): the exp branch does not lead to x
  const Tensor y = ad::sum(ad::square(ad::tanh(x))) + ad::sum(ad::exp(W));
  g_seen_ops.clear();
  ad::set_backward_observer(record_op);
  const std::vector<Tensor> g = ad::grad(y, {x});
  ad::set_backward_observer(nullptr);
  auto seen = [](const char* op) { return std::find(g_seen_ops.begin(), g_seen_ops.end(), op) != g_seen_ops.end(); };
  CHECK(seen("tanh"));
  CHECK_FALSE(seen("exp"));  // skipped: grad() discards W's gradient anyway
  for (int64_t i = 0; i < 3; ++i) {
    const double t = std::tanh(x.item(i));
    CHECK(g[0].item(i) == doctest::Approx(2 * t * (1 - t * t)).epsilon(1e-14));
  }
  // no requested input reachable: zeros, and a wrong grad_output is still an error
  const Tensor e = ad::sum(ad::exp(W));
  CHECK(ad::grad(e, {x})[0].item(1) == 0.0);
  CHECK_THROWS_AS(ad::grad(e, {x}, ad::ones({2}, ad::DType::f64)), ad::Error);
  // a full backward still reaches every leaf
  ad::backward(y);
  CHECK(W.grad().item(0) == doctest::Approx(std::exp(0.3)).epsilon(1e-14));
}

TEST_CASE("autodiff: no-grad scope records nothing; detach cuts the graph") {
  Tensor x = ad::ones({2}, ad::DType::f64);
  x.requires_grad_();
  {
    ad::NoGradGuard ng;
    CHECK_FALSE(ad::mul(x, x).requires_grad());
  }
  Tensor d = ad::detach(ad::mul(x, x));
  CHECK_FALSE(d.requires_grad());
  CHECK(ad::mul(d, x).requires_grad());
}

TEST_CASE("autodiff: lower-leaky backward follows METHODS 3.2 exactly") {
  // z = [-0.5, -0.5, 0.5, 1.5, 1.0]; upstream g = [-2, 2, 3, 4, 5]
  Tensor z = ad::from_vector({-0.5, -0.5, 0.5, 1.5, 1.0}, {5}, ad::DType::f64);
  z.requires_grad_();
  Tensor y = ad::lower_leaky_hard_sigmoid(z, 0.01);
  CHECK(y.to_vector() == std::vector<double>{0, 0, 0.5, 1, 1});
  ad::backward(y, ad::from_vector({-2, 2, 3, 4, 5}, {5}, ad::DType::f64));
  // z<=0 and g<0 -> alpha g; z<=0 and g>0 -> 0; 0<z<=1 -> g; z>1 -> 0
  CHECK(z.grad().to_vector() == std::vector<double>{-0.02, 0, 3, 0, 5});
}

TEST_CASE("autodiff: shape errors name the op and both shapes") {
  Tensor a = ad::zeros({3, 4}), b = ad::zeros({5, 6});
  try {
    ad::matmul(a, b);
    FAIL("no error");
  } catch (const ad::Error& e) {
    std::string m = e.what();
    CHECK(m.find("matmul") != std::string::npos);
    CHECK(m.find("[3, 4]") != std::string::npos);
    CHECK(m.find("[5, 6]") != std::string::npos);
  }
  CHECK_THROWS_AS(ad::add(ad::zeros({3, 4}), ad::zeros({3, 5})), ad::Error);
}

TEST_CASE("autodiff: NaN guard names the first op producing a non-finite value") {
  Tensor x = ad::from_vector({1.0, -1.0}, {2}, ad::DType::f64);
  x.requires_grad_();
  {
    ad::NanGuardScope guard;
    try {
      ad::sqrt(ad::mul_scalar(x, 2.0));
      FAIL("no error");
    } catch (const ad::Error& e) {
      CHECK(std::string(e.what()).find("'sqrt'") != std::string::npos);
    }
    // backward: d sqrt(u)/du at u = 0 is infinite
    Tensor u = ad::from_vector({0.0, 1.0}, {2}, ad::DType::f64);
    u.requires_grad_();
    Tensor y = ad::sum(ad::sqrt(u));
    try {
      ad::backward(y);
      FAIL("no error");
    } catch (const ad::Error& e) {
      CHECK(std::string(e.what()).find("backward of op 'sqrt'") != std::string::npos);
    }
  }
  CHECK(std::isnan(ad::sqrt(x).item(1)));  // guard off again: no error
}

TEST_CASE("autodiff: a repeated step allocates nothing once warmed up") {
  ad::Rng rng(3);
  Tensor W = ad::rand_normal({17, 13}, 0, 0.1, rng);
  Tensor b = ad::zeros({17});
  W.requires_grad_();
  b.requires_grad_();
  Tensor x = ad::rand_normal({31, 13}, 0, 1, rng), t = ad::rand_normal({31, 17}, 0, 1, rng);
  auto step = [&] {
    Tensor loss = ad::mse_loss(ad::relu(ad::linear(x, W, b)), t);
    ad::backward(loss);
  };
  step();
  step();
  uint64_t before = ad::pool_stats().heap_allocs;
  for (int i = 0; i < 10; ++i) step();
  CHECK(ad::pool_stats().heap_allocs == before);
}

TEST_CASE("autodiff: BLAS gemm matches the reference loop for every transpose") {
  ad::Rng rng(5);
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int M = 13, N = 7, K = 11;
      std::vector<double> A(M * K), B(K * N), C1(M * N, 0.5), C2(M * N, 0.5);
      for (auto& v : A) v = rng.normal();
      for (auto& v : B) v = rng.normal();
      ad::gemm(ta, tb, M, N, K, 1.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0, C1.data(), N);
      ad::gemm_reference<double>(ta, tb, M, N, K, 1.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0, C2.data(), N);
      for (int i = 0; i < M * N; ++i) CHECK(C1[i] == doctest::Approx(C2[i]).epsilon(1e-12));
    }
}

TEST_CASE("autodiff: chunked gemm (split over the thread pool) matches the reference loop and any thread count") {
  // Products above 2M multiply-adds are cut into 2 or 4 pieces along M or N; sizes are odd so
  // the pieces are uneven, and both a tall (split M) and a wide (split N) case run per transpose.
  CHECK(ad::gemm_chunks(8, 8, 8) == 1);
  CHECK(ad::gemm_chunks(301, 101, 103) == 2);
  CHECK(ad::gemm_chunks(1001, 517, 263) == 2);
  CHECK(ad::gemm_chunks(2000, 2000, 300) == 4);
  CHECK(ad::gemm_chunks(20, 30000, 3000) == 4);  // split along the longer side, N
  CHECK(ad::gemm_chunks(20, 20, 10000) == 1);    // 4M multiply-adds, but 20 is too short to cut
  ad::Rng rng(15);
  const int old_threads = ad::num_threads();
  struct Size { int64_t M, N, K; };
  for (Size sz : {Size{301, 101, 103}, Size{97, 509, 89}, Size{1001, 517, 263}, Size{1999, 1001, 503}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t M = sz.M, N = sz.N, K = sz.K;
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(ta);
        CAPTURE(tb);
        REQUIRE(ad::gemm_chunks(M, N, K) > 1);
        std::vector<double> A(M * K), B(K * N), ref(M * N);
        for (auto& v : A) v = rng.normal();
        for (auto& v : B) v = rng.normal();
        for (auto& v : ref) v = rng.normal();
        std::vector<double> C2 = ref;
        std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end()), Cf1(ref.begin(), ref.end()), Cf2 = Cf1;
        // the 4-piece size (1G multiply-adds) is checked on 3000 sampled entries, the others in full
        const bool sampled = (double)M * N * K > 1e8;
        std::vector<int64_t> entries;
        if (sampled) {
          for (int e = 0; e < 3000; ++e) entries.push_back((int64_t)rng.below((uint64_t)(M * N)));
          std::sort(entries.begin(), entries.end());
          entries.erase(std::unique(entries.begin(), entries.end()), entries.end());
          for (int64_t e : entries) {
            const int64_t i = e / N, j = e % N;
            double acc = 0;
            for (int64_t k = 0; k < K; ++k) acc += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
            ref[e] += 0.5 * acc;
          }
        } else {
          ad::gemm_reference<double>(ta, tb, M, N, K, 0.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0, ref.data(), N);
          for (int64_t e = 0; e < M * N; ++e) entries.push_back(e);
        }
        ad::set_num_threads(2);
        ad::gemm(ta, tb, M, N, K, 0.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0, C2.data(), N);
        ad::gemm(ta, tb, M, N, K, 0.5f, Af.data(), ta ? M : K, Bf.data(), tb ? K : N, 1.0f, Cf1.data(), N);
        ad::set_num_threads(1);
        ad::gemm(ta, tb, M, N, K, 0.5f, Af.data(), ta ? M : K, Bf.data(), tb ? K : N, 1.0f, Cf2.data(), N);
        int bad = 0, differ = 0;
        for (int64_t i : entries) {
          bad += std::abs(C2[i] - ref[i]) > 1e-10 * (1 + std::abs(ref[i]));
          bad += std::abs(Cf1[i] - ref[i]) > 2e-4 * (1 + std::abs(ref[i]));
        }
        for (int64_t i = 0; i < M * N; ++i) differ += Cf1[i] != Cf2[i];  // bit-identical across thread counts
        CHECK(bad == 0);
        CHECK(differ == 0);
      }
  ad::set_num_threads(old_threads);
}

TEST_CASE("autodiff: matmul with a mostly-zero left operand (sparse path) matches the reference loop") {
  ad::Rng rng(6);
  for (ad::DType dt : {ad::DType::f32, ad::DType::f64}) {
    const int64_t M = 37, K = 19, N = 21;  // N >= 16 takes the sparse path
    Tensor A = ad::zeros({M, K}, dt), B = ad::rand_normal({K, N}, 0, 1, rng, dt);
    for (int64_t i = 0; i < M; i += 3) A.set_item(i * K + (i * 7) % K, rng.normal());  // 13 of 703 non-zero
    std::vector<double> a = A.to_vector(), b = B.to_vector(), ref(M * N, 0.0);
    ad::gemm_reference<double>(false, false, M, N, K, 1.0, a.data(), K, b.data(), N, 0.0, ref.data(), N);
    Tensor C = ad::matmul(A, B);
    for (int64_t i = 0; i < M * N; ++i) CHECK(C.item(i) == doctest::Approx(ref[i]).epsilon(dt == ad::DType::f32 ? 1e-5 : 1e-12));
    // the same through the dense path (transposed B is never sparse-pathed)
    Tensor Ct = ad::matmul(A, ad::transpose(B, 0, 1), false, true);
    for (int64_t i = 0; i < M * N; ++i) CHECK(Ct.item(i) == doctest::Approx(ref[i]).epsilon(dt == ad::DType::f32 ? 1e-5 : 1e-12));
  }
  std::vector<float> dense = {1, 2, 0, 0, 0, 0, 0, 0, 0}, sparse = {1, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK_FALSE(ad::mostly_zero(dense.data(), 9));
  CHECK(ad::mostly_zero(sparse.data(), 9));
}

TEST_CASE("autodiff: sum over every axis subset matches a plain reference loop (values and gradients)") {
  // Contiguous runs of axes take the [outer, R, inner] loops, gapped sets the generic walk.
  ad::Rng rng(16);
  const int64_t d[4] = {3, 5, 7, 9};
  Tensor x = ad::rand_normal({3, 5, 7, 9}, 0, 1, rng, ad::DType::f64);
  x.requires_grad_(true);
  for (int set = 1; set < 16; ++set) {
    std::vector<int> axes;
    for (int a = 0; a < 4; ++a)
      if (set >> a & 1) axes.push_back(a);
    CAPTURE(set);
    Tensor y = ad::sum(x, axes, true);  // kept dims: out index = input index with reduced dims at 0
    std::vector<double> ref(y.numel(), 0.0);
    int64_t ost[4], st = 1;
    for (int a = 3; a >= 0; --a) ost[a] = (set >> a & 1) ? 0 : st, st *= (set >> a & 1) ? 1 : d[a];
    for (int64_t i0 = 0; i0 < 3; ++i0)
      for (int64_t i1 = 0; i1 < 5; ++i1)
        for (int64_t i2 = 0; i2 < 7; ++i2)
          for (int64_t i3 = 0; i3 < 9; ++i3)
            ref[i0 * ost[0] + i1 * ost[1] + i2 * ost[2] + i3 * ost[3]] += x.item(((i0 * 5 + i1) * 7 + i2) * 9 + i3);
    int bad = 0;
    for (int64_t j = 0; j < y.numel(); ++j) bad += std::fabs(y.item(j) - ref[j]) > 1e-12;
    CHECK(bad == 0);
    // backward: dx[i] = R[out(i)] exactly (a random upstream, broadcast back)
    Tensor R = ad::rand_normal(y.shape(), 0, 1, rng, ad::DType::f64);
    Tensor gx = ad::grad(y, {x}, R)[0];
    bad = 0;
    for (int64_t i0 = 0; i0 < 3; ++i0)
      for (int64_t i1 = 0; i1 < 5; ++i1)
        for (int64_t i2 = 0; i2 < 7; ++i2)
          for (int64_t i3 = 0; i3 < 9; ++i3)
            bad += gx.item(((i0 * 5 + i1) * 7 + i2) * 9 + i3) != R.item(i0 * ost[0] + i1 * ost[1] + i2 * ost[2] + i3 * ost[3]);
    CHECK(bad == 0);
  }
}

TEST_CASE("autodiff: same seed gives bit-identical random streams") {
  ad::Rng a(42), b(42), c(43);
  Tensor x = ad::rand_normal({100}, 0, 1, a), y = ad::rand_normal({100}, 0, 1, b), z = ad::rand_normal({100}, 0, 1, c);
  CHECK(x.to_vector() == y.to_vector());
  CHECK(x.to_vector() != z.to_vector());
  ad::Rng r(7);
  double m = 0, v = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) { double s = r.normal(); m += s; v += s * s; }
  CHECK(std::abs(m / n) < 0.01);
  CHECK(std::abs(v / n - 1) < 0.02);
  auto p = r.permutation(10);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 10; ++i) CHECK(sorted[i] == i);
}
