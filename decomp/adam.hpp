// Adam / AdamW over a list of leaf tensors, and global gradient-norm clipping of one group.
// (Kept local to decomp/ so SPD trains without waiting for the shared optimiser; the update is
// PyTorch's: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps),
// with decoupled weight decay p -= lr wd p first.)
#pragma once
#include <cmath>
#include <vector>

#include "autodiff/tensor.hpp"

namespace decomp {

class Adam {
 public:
  Adam(const std::vector<ad::Tensor>& params, double lr, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8, double weight_decay = 0.0)
      : params_(params), lr_(lr), b1_(beta1), b2_(beta2), eps_(eps), wd_(weight_decay) {
    for (const ad::Tensor& p : params_) {
      m_.emplace_back((size_t)p.numel(), 0.0);
      v_.emplace_back((size_t)p.numel(), 0.0);
    }
  }
  // One update with learning rate lr * lr_factor. Parameters without a gradient are skipped
  // (their moments still decay, as in PyTorch only parameters with .grad are updated: skipped).
  void step(double lr_factor) {
    ++t_;
    const double lr = lr_ * lr_factor;
    const double bc1 = 1.0 - std::pow(b1_, (double)t_), bc2 = 1.0 - std::pow(b2_, (double)t_);
    for (size_t i = 0; i < params_.size(); ++i) {
      const ad::Tensor& p = params_[i];
      ad::dispatch(p.dtype(), [&](auto z) {
        using T = decltype(z);
        T* w = p.data<T>();
        const T* g = p.grad_data<T>();
        if (!g) return;
        double *m = m_[i].data(), *v = v_[i].data();
        for (int64_t k = 0; k < p.numel(); ++k) {
          const double gk = (double)g[k];
          m[k] = b1_ * m[k] + (1 - b1_) * gk;
          v[k] = b2_ * v[k] + (1 - b2_) * gk * gk;
          double wk = (double)w[k];
          if (wd_ != 0) wk -= lr * wd_ * wk;
          wk -= lr * (m[k] / bc1) / (std::sqrt(v[k] / bc2) + eps_);
          w[k] = (T)wk;
        }
      });
    }
  }

 private:
  std::vector<ad::Tensor> params_;
  std::vector<std::vector<double>> m_, v_;
  double lr_, b1_, b2_, eps_, wd_;
  int64_t t_ = 0;
};

// Scales the group's gradients so their joint L2 norm is at most max_norm; returns the norm
// before clipping.
inline double clip_grad_norm(const std::vector<ad::Tensor>& params, double max_norm) {
  double sq = 0;
  for (const ad::Tensor& p : params)
    ad::dispatch(p.dtype(), [&](auto z) {
      using T = decltype(z);
      const T* g = p.grad_data<T>();
      if (g)
        for (int64_t k = 0; k < p.numel(); ++k) sq += (double)g[k] * (double)g[k];
    });
  const double norm = std::sqrt(sq);
  if (norm > max_norm && norm > 0) {
    const double s = max_norm / norm;
    for (const ad::Tensor& p : params)
      ad::dispatch(p.dtype(), [&](auto z) {
        using T = decltype(z);
        T* g = p.grad_data<T>();
        if (g)
          for (int64_t k = 0; k < p.numel(); ++k) g[k] = (T)(g[k] * s);
      });
  }
  return norm;
}

}  // namespace decomp
