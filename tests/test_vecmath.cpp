// The float32 kernels of autodiff/rowmath.hpp (exp, horizontal sum, erf-GELU, tanh-GELU):
// the vectorised code against its scalar reference over grids and special values (0, -0,
// +-inf, NaN, huge, tiny, subnormal), against the exact function, and the gelu_erf op's
// float32 path against float64. Built without AVX2/FMA (make ARCH=) the row kernels are the
// scalar reference itself and the same checks hold.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ios>
#include <limits>
#include <vector>

#include "autodiff/ops.hpp"
#include "autodiff/rowmath.hpp"

namespace rm = ad::rowmath;

namespace {
// distance in float ulps (counts of representable floats between a and b; 0 for equal
// values, including +0 / -0)
int64_t ulp_dist(float a, float b) {
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : (int64_t)i;
  };
  return std::llabs(key(a) - key(b));
}
bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }
// same bits, or both NaN (the compiler may swap the operands of a product, and with them
// which NaN payload and sign come out)
bool same_value(float a, float b) { return same_bits(a, b) || (std::isnan(a) && std::isnan(b)); }
// the float ulp at |r| (the gap to the next float up), subnormal spacing below FLT_MIN
double ulp_at(double r) {
  const float f = (float)std::fabs(r);
  return f < FLT_MIN ? 1.401298464324817e-45 : (double)std::nextafter(f, INFINITY) - (double)f;
}
// special and awkward inputs shared by the tests below
std::vector<float> special_values() {
  const float sub = std::numeric_limits<float>::denorm_min();
  std::vector<float> v = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX, 1e30f, -1e30f, 1e19f, -1e19f,
                          FLT_MIN, -FLT_MIN, 1e-40f, -1e-40f, sub, -sub, 1e-30f, -1e-30f, 1e-8f, -1e-8f, 1.0f, -1.0f};
  // around the exp kernel's clamps and overflow/underflow thresholds
  for (float x : {rm::kExpLo, rm::kExpHi, 88.3762626647949f, 88.72283935546875f, -87.0f, -103.9f, -104.0f, 89.5f, 100.0f,
                  -13.2164f, -13.22f, 13.22f, 5.42f, 5.5f, 6.5f, -10.06f, -10.07f, 9.345f})
    for (float y : {x, std::nextafter(x, INFINITY), std::nextafter(x, -INFINITY)}) v.push_back(y), v.push_back(-y);
  return v;
}
// dense grid over [lo, hi] (n points) followed by the special values
std::vector<float> grid_and_specials(double lo, double hi, int64_t n) {
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i) v.push_back((float)(lo + (hi - lo) * (double)i / (double)(n - 1)));
  for (float s : special_values()) v.push_back(s);
  while (v.size() % 8) v.push_back(0.5f);  // whole vectors: every value takes the 8-lane path
  return v;
}
}  // namespace

TEST_CASE("vecmath: exp kernel against its scalar reference and the exact exp, special values included") {
  const std::vector<float> x = grid_and_specials(-110, 110, 400003);
  std::vector<float> y(x.size());
  rm::exp_shift_sum(x.data(), y.data(), (int64_t)x.size(), 0.0f);  // y = exp(x) (vector kernel)
  int64_t worst_ref = 0, worst_exact_x100 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i] << " (" << std::hexfloat << x[i] << std::defaultfloat << "), exp kernel " << y[i]);
    const float ref = rm::exp_scalar(x[i]);
    // special values, exactly
    if (std::isnan(x[i])) {
      CHECK(std::isnan(y[i]));
      CHECK(std::isnan(ref));
      continue;
    }
    if (x[i] < rm::kExpLo) CHECK((y[i] == 0.0f && ref == 0.0f));  // -inf too: no subnormal results
    if (x[i] > 88.72284f) CHECK((y[i] == INFINITY && ref == INFINITY));  // +inf too
    if (std::fabs(x[i]) < 1e-8f) CHECK((y[i] == 1.0f && ref == 1.0f));  // 0, -0, subnormals
    // the kernel and its reference: at most 1 ulp apart when the compiler contracts the
    // reference's a*b+c into FMA as the kernel does (-O2 and up with -mfma), 2 when it does not
    // (the -O1 sanitizer build): the kernel's bits are the same in both, the reference's are not
    worst_ref = std::max(worst_ref, ulp_dist(y[i], ref));
    CHECK(ulp_dist(y[i], ref) <= 2);
    // both against the exact value, where that is a normal float
    const double exact = std::exp((double)x[i]);
    if (x[i] >= rm::kExpLo && exact <= FLT_MAX) {
      const double e = std::fabs(y[i] - exact) / ulp_at(exact), er = std::fabs(ref - exact) / ulp_at(exact);
      worst_exact_x100 = std::max(worst_exact_x100, (int64_t)(100 * std::max(e, er)));
      CHECK(e <= 1.3);
      CHECK(er <= 1.3);
    }
  }
  MESSAGE("exp: kernel vs scalar reference <= " << worst_ref << " ulp; vs exact <= " << worst_exact_x100 / 100.0 << " ulp");
#ifdef AD_ROWMATH_AVX2
  // exp_avx2<true> (arguments <= 0, the GELU's) is bit-identical to exp_avx2 there, except
  // below FLT_MIN between -87.683 and kExpLo, where it keeps the subnormal e^x
  std::vector<float> neg;
  for (float v : x)
    if (!(v > 0)) neg.push_back(v);  // NaN stays in
  for (float v = -87.7f; v < -87.3f; v += 0.0001f) neg.push_back(v);
  while (neg.size() % 8) neg.push_back(-1.0f);
  for (size_t i = 0; i + 8 <= neg.size(); i += 8) {
    float a[8], b[8];
    _mm256_storeu_ps(a, rm::exp_avx2(_mm256_loadu_ps(&neg[i])));
    _mm256_storeu_ps(b, rm::exp_avx2<true>(_mm256_loadu_ps(&neg[i])));
    for (int j = 0; j < 8; ++j) {
      const float v = neg[i + j];
      INFO("x = " << v << ": exp_avx2 " << a[j] << ", exp_avx2<true> " << b[j]);
      if (v < rm::kExpLo && std::nearbyint(v * rm::kLog2e) == -126.0f) {  // -87.683 <= v < kExpLo
        CHECK(a[j] == 0.0f);
        CHECK(std::fabs(b[j] - std::exp((double)v)) <= 3e-45);  // subnormal, rounded once
      } else {
        CHECK(same_bits(a[j], b[j]));
      }
    }
  }
#endif
}

TEST_CASE("vecmath: hsum adds the 8 lanes in hsum_scalar's order") {
#ifdef AD_ROWMATH_AVX2
  // magnitudes from 1e-8 to 1e8 with both signs: any other order of the additions rounds
  // differently on most of these draws
  uint32_t state = 12345;
  auto next = [&state] { return state = state * 1664525u + 1013904223u; };
  int orders_differ = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    float v[8];
    for (float& f : v) f = (next() % 2 ? 1.0f : -1.0f) * std::pow(10.0f, (float)(next() % 1700) / 100.0f - 8.0f);
    const float got = rm::hsum(_mm256_loadu_ps(v)), ref = rm::hsum_scalar(v);
    float seq = 0;
    for (float f : v) seq += f;
    orders_differ += !same_bits(seq, ref);
    CHECK(same_bits(got, ref));
  }
  CHECK(orders_differ > 100);  // the check above can tell orders apart
  // IEEE propagation: NaN and inf lanes
  float w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  CHECK(rm::hsum(_mm256_loadu_ps(w)) == 36.0f);
  w[5] = INFINITY;
  CHECK(rm::hsum(_mm256_loadu_ps(w)) == INFINITY);
  w[2] = -INFINITY;
  CHECK(std::isnan(rm::hsum(_mm256_loadu_ps(w))));
  w[2] = NAN, w[5] = 6;
  CHECK(std::isnan(rm::hsum(_mm256_loadu_ps(w))));
#else
  MESSAGE("built without AVX2/FMA: no vector hsum to test");
#endif
}

TEST_CASE("vecmath: erf-GELU kernels against the scalar reference and the exact function, special values included") {
  const std::vector<float> x = grid_and_specials(-16, 16, 300003);
  const int64_t n = (int64_t)x.size();
  std::vector<float> y(x.size()), y2(x.size()), dy(x.size()), gx(x.size(), 0.0f), inplace = x, one(x.size(), 1.0f);
  rm::gelu_erf_forward(x.data(), y.data(), n);
  rm::gelu_erf_with_grad(x.data(), y2.data(), dy.data(), n);
  rm::gelu_erf_backward(x.data(), one.data(), gx.data(), n);
  std::vector<float> dy_inplace(x.size());
  rm::gelu_erf_with_grad(inplace.data(), inplace.data(), dy_inplace.data(), n);  // as the CI functions call it
  int64_t worst_y = 0, worst_dy = 0;
  double worst_y_exact = 0, worst_dy_exact = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[(size_t)i];
    INFO("x = " << v << " (" << std::hexfloat << v << std::defaultfloat << "): y " << y[(size_t)i] << ", dy " << dy[(size_t)i]);
    // the three entry points give the same bits
    CHECK(same_value(y[(size_t)i], y2[(size_t)i]));
    CHECK(same_value(y[(size_t)i], inplace[(size_t)i]));
    CHECK(same_value(dy[(size_t)i], dy_inplace[(size_t)i]));
    CHECK((std::isnan(dy[(size_t)i]) ? std::isnan(gx[(size_t)i]) : gx[(size_t)i] == dy[(size_t)i]));  // gx = 0 + 1 dy
    float Phi, phi;
    rm::gelu_erf_parts(v, Phi, phi);
    const float y_ref = v * Phi, dy_ref = Phi + v * phi;
    // special values, exactly
    if (std::isnan(v) || std::isinf(v)) {
      if (v == INFINITY) CHECK(y[(size_t)i] == INFINITY);
      else CHECK(std::isnan(y[(size_t)i]));  // NaN; -inf * Phi(-inf) = -inf * 0
      CHECK(std::isnan(dy[(size_t)i]));       // inf * phi(inf) = inf * 0, as in float64
      CHECK(std::isnan(y_ref) == std::isnan(y[(size_t)i]));
      CHECK(std::isnan(dy_ref));
      continue;
    }
    if (v == 0) {
      CHECK(same_bits(y[(size_t)i], v));  // +-0 keeps its sign
      CHECK(dy[(size_t)i] == 0.5f);
    }
    if (v < -13.22f) {  // exp(-x^2/2) below FLT_MIN
      CHECK((y[(size_t)i] <= 0 && y[(size_t)i] > -1e-37 && std::fabs(dy[(size_t)i]) < 1e-36));
#ifdef AD_ROWMATH_AVX2
      if (v < -13.25f) CHECK((same_bits(y[(size_t)i], -0.0f) && dy[(size_t)i] == 0.0f));  // flushed to 0
#endif
    }
    if (v > 5.5f) CHECK(y[(size_t)i] == v);  // Phi rounds to 1
    if (v > 6.5f) CHECK(dy[(size_t)i] == 1.0f);  // and x phi(x) to 0 next to it
    if (std::fabs(v) < 1e-30f) CHECK(std::fabs(y[(size_t)i] - 0.5 * v) <= 1.5e-45);
    // kernel vs scalar reference: within 4 ulps of Phi and phi, while exp(-x^2/2) is a normal
    // float; beyond, the kernel's exp gives 0 where the reference's libm exp is subnormal
    if (std::fabs(v) < 13.2f) {
      const double tol_Phi = 4 * ulp_at(Phi), tol_phi = 4 * ulp_at(phi);
      // Plus the reference's own rounding, which depends on FMA contraction (above): x*x
      // rounded one way or the other moves exp(-x^2/2) by up to (x^2/2) 2^-23 relative, which
      // the tail of Phi and phi carries into y and dy.
      // Without contraction each of the reference's six multiply-adds (Horner steps of q, then
      // q e) also rounds its product: up to 6 * 2^-24 more, relative.
      const double contraction = (double)v * v * 0x1p-23 + 6 * 0x1p-24;
      CHECK(std::fabs((double)y[(size_t)i] - y_ref) <=
            std::fabs(v) * tol_Phi + 2 * ulp_at(y_ref) + contraction * std::fabs(y_ref));
      CHECK(std::fabs((double)dy[(size_t)i] - dy_ref) <=
            tol_Phi + std::fabs(v) * tol_phi + 2 * ulp_at(dy_ref) + contraction * std::fabs(dy_ref));
      worst_y = std::max(worst_y, ulp_dist(y[(size_t)i], y_ref));
      worst_dy = std::max(worst_dy, ulp_dist(dy[(size_t)i], dy_ref));
    } else {
      CHECK(std::fabs(y[(size_t)i] - y_ref) <= 1e-37);
      CHECK(std::fabs(dy[(size_t)i] - dy_ref) <= 1e-36);
    }
    // against the exact function at the float input (the contract in rowmath.hpp)
    if (std::fabs(v) < 1e6f) {
      const double xd = v, P = 0.5 * std::erfc(-xd / std::sqrt(2.0)), p = std::exp(-0.5 * xd * xd) / std::sqrt(2 * M_PI);
      const double ey = std::fabs(y[(size_t)i] - xd * P), edy = std::fabs(dy[(size_t)i] - (P + xd * p));
      CHECK(ey <= 3e-7 * std::fabs(xd) + ulp_at(xd * P));
      CHECK(edy <= 4e-7);
      worst_y_exact = std::max(worst_y_exact, ey / (3e-7 * std::fabs(xd) + ulp_at(xd * P)));
      worst_dy_exact = std::max(worst_dy_exact, edy);
    }
  }
  MESSAGE("gelu_erf: kernel vs scalar reference <= " << worst_y << " ulp (y), " << worst_dy << " ulp (dy); vs exact: "
          << worst_y_exact << " of the y bound, |ddy| <= " << worst_dy_exact);
}

TEST_CASE("vecmath: tanh-GELU kernels against the scalar reference, special values included") {
  const std::vector<float> x = grid_and_specials(-30, 30, 60003);
  const int64_t n = (int64_t)x.size();
  std::vector<float> y(x.size()), gx(x.size(), 0.0f), one(x.size(), 1.0f);
  rm::gelu_tanh_forward(x.data(), y.data(), n);
  rm::gelu_tanh_backward(x.data(), one.data(), gx.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[(size_t)i];
    INFO("x = " << v << ": y " << y[(size_t)i] << ", dy " << gx[(size_t)i]);
    float oms;
    const float s = rm::gelu_tanh_sig(v, &oms);
    const float y_ref = v * s, dy_ref = s + v * s * oms * 2.0f * rm::kGeluC * (1.0f + 3.0f * rm::kGeluK * v * v);
    if (std::isnan(v) || std::isinf(v)) {
      if (v == INFINITY) CHECK(y[(size_t)i] == INFINITY);
      else CHECK(std::isnan(y[(size_t)i]));
      CHECK(std::isnan(gx[(size_t)i]));
      continue;
    }
    CHECK(!std::isnan(y[(size_t)i]));  // finite x: a number
    if (std::fabs(v) > 1.9e19f) {      // x^2 overflows in the derivative (documented)
      CHECK(y[(size_t)i] == (v > 0 ? v : 0.0f));
      CHECK(std::isnan(gx[(size_t)i]));
      continue;
    }
    if (v < -10.07f) CHECK((y[(size_t)i] == 0.0f && gx[(size_t)i] == 0.0f));  // exp(-2u) overflows: s = 0
    if (v == 0) CHECK((same_bits(y[(size_t)i], v) && gx[(size_t)i] == 0.5f));
    // exp(-2u) amplifies the rounding of u by |2u| (up to 89): 2e-5 relative in the far tail
    CHECK(std::fabs(y[(size_t)i] - y_ref) <= 2e-5 * std::fabs(y_ref) + 1e-37);
    CHECK(std::fabs(gx[(size_t)i] - dy_ref) <= 1e-6);
  }
}

TEST_CASE("ops: gelu_erf float32 vector kernel matches float64 values and gradients") {
  // Grid over [-12, 12] (tails, zero, the kink region), length not a multiple of 8 so the
  // scalar remainder runs too; plus NaN handling is left to the NaN guard (not tested here).
  const int64_t n = 24003;
  std::vector<double> v((size_t)n);
  for (int64_t i = 0; i < n; ++i) v[(size_t)i] = -12.0 + 24.0 * (double)i / (double)(n - 1);
  ad::Tensor x32 = ad::from_vector(v, {n}, ad::DType::f32), x64 = ad::from_vector(v, {n}, ad::DType::f64);
  x32.requires_grad_(true);
  x64.requires_grad_(true);
  ad::Tensor y32 = ad::gelu_erf(x32), y64 = ad::gelu_erf(x64);
  std::vector<double> up((size_t)n);
  for (int64_t i = 0; i < n; ++i) up[(size_t)i] = std::cos(0.37 * (double)i);  // random-ish upstream
  ad::backward(y32, ad::from_vector(up, {n}, ad::DType::f32));
  ad::backward(y64, ad::from_vector(up, {n}, ad::DType::f64));
  double max_y = 0, max_g = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double xi = (double)(float)v[(size_t)i];  // the float input actually used
    const double Phi = 0.5 * (1 + std::erf(xi / std::sqrt(2.0)));
    const double phi = std::exp(-0.5 * xi * xi) / std::sqrt(2 * M_PI);
    const double y_ref = xi * Phi, g_ref = up[(size_t)i] * (Phi + xi * phi);
    max_y = std::max(max_y, std::abs(y32.item(i) - y_ref) / std::max(1.0, std::abs(y_ref)));
    max_g = std::max(max_g, std::abs(x32.grad().item(i) - g_ref));
    // left tail: A&S's bound is absolute (1.5e-7 on erf), so |dy| <= ~1e-7 |x|; and the
    // result never has the wrong sign or overshoots zero.
    if (xi < -1) {
      CHECK(std::abs(y32.item(i) - y_ref) <= 1.5e-7 * std::abs(xi));
      CHECK(y32.item(i) <= 0.0);
    }
  }
  MESSAGE("gelu_erf float32: max |dy| " << max_y << ", max |dx| " << max_g);
  CHECK(max_y < 1e-6);
  CHECK(max_g < 1e-6);
  CHECK(y64.item(0) == doctest::Approx(-12.0 * 0.5 * std::erfc(12.0 / std::sqrt(2.0))));
}
