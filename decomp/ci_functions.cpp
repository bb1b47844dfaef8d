#include "decomp/ci_functions.hpp"

#include <cmath>

#include "decomp/ci_ops.hpp"

namespace decomp {

using ad::Tensor;

CIType parse_ci_type(const std::string& s) {
  if (s == "mlp") return CIType::mlp;
  if (s == "vector_mlp") return CIType::vector_mlp;
  if (s == "shared_mlp") return CIType::shared_mlp;
  if (s == "transformer") return CIType::transformer;
  ad::fail("unknown CI function type '" + s + "' (expected mlp, vector_mlp, shared_mlp or transformer)");
}
const char* ci_type_name(CIType t) {
  switch (t) {
    case CIType::mlp: return "mlp";
    case CIType::vector_mlp: return "vector_mlp";
    case CIType::transformer: return "transformer";
    default: return "shared_mlp";
  }
}

Tensor leaf_normal(const ad::Shape& s, double std, ad::DType dt, ad::Rng& rng) {
  Tensor t = ad::rand_normal(s, 0.0, std, rng, dt);
  t.requires_grad_(true);
  return t;
}
Tensor leaf_uniform(const ad::Shape& s, double bound, ad::DType dt, ad::Rng& rng) {
  Tensor t = ad::rand_uniform(s, -bound, bound, rng, dt);
  t.requires_grad_(true);
  return t;
}
Tensor leaf_zeros(const ad::Shape& s, ad::DType dt) {
  Tensor t = ad::zeros(s, dt);
  t.requires_grad_(true);
  return t;
}

// ---- per-layer CI functions ------------------------------------------------------------------
void CIFunction::init(CIType t, const std::vector<int64_t>& hidden_sizes, int64_t d_in, int64_t C,
                      ad::DType dt, ad::Rng& rng) {
  if (t == CIType::transformer) ad::fail("CI function 'transformer' is global only (\"global\": true)");
  type = t;
  hidden = hidden_sizes;
  params.clear();
  param_names.clear();
  if (type != CIType::shared_mlp && hidden.size() != 1)
    ad::fail(std::string("CI function '") + ci_type_name(type) +
             "' takes exactly one hidden layer size (e.g. [16]); got " + std::to_string(hidden.size()));
  for (int64_t h : hidden)
    if (h <= 0) ad::fail("CI function hidden sizes must be positive");
  if (type == CIType::mlp) {
    const int64_t H = hidden[0];
    // Hidden layer fan_in = 1 (the scalar h_c): std sqrt(2); last layer fan_in = H.
    params = {leaf_normal({C, H}, std::sqrt(2.0), dt, rng), leaf_zeros({C, H}, dt),
              leaf_normal({C, H}, 1.0 / std::sqrt((double)H), dt, rng), leaf_zeros({C}, dt)};
    param_names = {"W1", "b1", "W2", "b2"};
  } else if (type == CIType::vector_mlp) {
    const int64_t H = hidden[0];
    params = {leaf_normal({d_in, C * H}, std::sqrt(2.0 / (double)d_in), dt, rng), leaf_zeros({C, H}, dt),
              leaf_normal({C, H}, 1.0 / std::sqrt((double)H), dt, rng), leaf_zeros({C}, dt)};
    param_names = {"W1", "b1", "W2", "b2"};
  } else {
    int64_t fan_in = d_in;
    for (size_t k = 0; k <= hidden.size(); ++k) {
      const bool last = k == hidden.size();
      const int64_t fan_out = last ? C : hidden[k];
      const double std = last ? 1.0 / std::sqrt((double)fan_in) : std::sqrt(2.0 / (double)fan_in);
      params.push_back(leaf_normal({fan_in, fan_out}, std, dt, rng));
      params.push_back(leaf_zeros({fan_out}, dt));
      param_names.push_back("W" + std::to_string(k + 1));
      param_names.push_back("b" + std::to_string(k + 1));
      fan_in = fan_out;
    }
  }
}

Tensor CIFunction::forward(const Tensor& x, const Tensor& h) const {
  if (type == CIType::mlp) {
    // h: [..., C] -> z_c = sum_k W2[c,k] gelu(h_c W1[c,k] + b1[c,k]) + b2[c]  (fused kernel)
    return ci_scalar_mlp(h, params[0], params[1], params[2], params[3]);
  }
  if (type == CIType::vector_mlp) {
    // x: [..., d_in] -> x W1: [..., C*H] -> z_c = sum_k W2[c,k] gelu((x W1)[c H + k] + b1[c,k]) + b2[c]
    // (fused kernel; tests compare it with the composed reshape + add + gelu + mul + sum)
    return ci_vector_mlp_head(ad::matmul(x, params[0]), params[1], params[2], params[3]);
  }
  Tensor a = x;
  const size_t n = params.size() / 2;
  for (size_t k = 0; k < n; ++k) {
    a = ad::matmul(a, params[2 * k]) + params[2 * k + 1];
    if (k + 1 < n) a = ad::gelu_erf(a);
  }
  return a;
}

// ---- global CI function -------------------------------------------------------------------------
void GlobalCIFunction::init(const std::vector<int64_t>& hidden_sizes, const std::vector<int64_t>& d_in,
                            const std::vector<int64_t>& C, ad::DType dt, ad::Rng& rng) {
  if (hidden_sizes.empty()) ad::fail("global CI function needs at least one hidden layer");
  hidden = hidden_sizes;
  int64_t total_in = 0;
  for (int64_t d : d_in) total_in += d;
  // Kaiming std with the fan-in of the concatenated input.
  first_w.clear();
  for (int64_t d : d_in) first_w.push_back(leaf_normal({d, hidden[0]}, std::sqrt(2.0 / (double)total_in), dt, rng));
  first_b = leaf_zeros({hidden[0]}, dt);
  mid_w.clear();
  mid_b.clear();
  for (size_t k = 1; k < hidden.size(); ++k) {
    mid_w.push_back(leaf_normal({hidden[k - 1], hidden[k]}, std::sqrt(2.0 / (double)hidden[k - 1]), dt, rng));
    mid_b.push_back(leaf_zeros({hidden[k]}, dt));
  }
  last_w.clear();
  last_b.clear();
  const int64_t Hl = hidden.back();
  for (int64_t c : C) {
    last_w.push_back(leaf_normal({Hl, c}, 1.0 / std::sqrt((double)Hl), dt, rng));
    last_b.push_back(leaf_zeros({c}, dt));
  }
}

std::vector<Tensor> GlobalCIFunction::forward(const std::vector<Tensor>& xs) const {
  Tensor a;
  for (size_t l = 0; l < xs.size(); ++l) {
    // rms(x) = x / sqrt(mean(x^2) + 1e-6) over the last dim (no learned gain)
    Tensor r = ad::sqrt(ad::mean(ad::square(xs[l]), {-1}, true) + 1e-6);
    Tensor p = ad::matmul(xs[l] / r, first_w[l]);
    a = a.defined() ? a + p : p;
  }
  a = ad::gelu_erf(a + first_b);
  for (size_t k = 0; k < mid_w.size(); ++k) a = ad::gelu_erf(ad::matmul(a, mid_w[k]) + mid_b[k]);
  std::vector<Tensor> z;
  for (size_t l = 0; l < last_w.size(); ++l) z.push_back(ad::matmul(a, last_w[l]) + last_b[l]);
  return z;
}

std::vector<Tensor> GlobalCIFunction::parameters() const {
  std::vector<Tensor> p = first_w;
  p.push_back(first_b);
  for (size_t k = 0; k < mid_w.size(); ++k) p.push_back(mid_w[k]), p.push_back(mid_b[k]);
  for (size_t l = 0; l < last_w.size(); ++l) p.push_back(last_w[l]), p.push_back(last_b[l]);
  return p;
}

std::vector<std::string> GlobalCIFunction::param_names(const std::vector<std::string>& layer_names) const {
  std::vector<std::string> n;
  for (const std::string& l : layer_names) n.push_back("ci_global.first_w." + l);
  n.push_back("ci_global.first_b");
  for (size_t k = 0; k < mid_w.size(); ++k)
    n.push_back("ci_global.mid_w" + std::to_string(k)), n.push_back("ci_global.mid_b" + std::to_string(k));
  for (const std::string& l : layer_names) n.push_back("ci_global.last_w." + l), n.push_back("ci_global.last_b." + l);
  return n;
}

}  // namespace decomp
