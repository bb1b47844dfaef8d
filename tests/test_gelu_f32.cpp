// The float32 GELU (erf) kernel (ops_elementwise.cpp) against the float64 reference path.
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/ops.hpp"

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
