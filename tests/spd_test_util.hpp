// Tiny targets for SPD tests, built from apply_linear calls (independent of models/).
#pragma once
#include <cmath>

#include "decomp/spd.hpp"

namespace spd_test {

// TMS-shaped target: h = W x, y = ReLU(W^T h + b), optional identity hidden layer.
// Hand-set weights: the columns of W form a regular n-gon in 2-d (for n_hidden = 2) or are
// random unit vectors; b = -bias.
struct TinyTMS {
  ad::Tensor W, WT, b, I;
  bool identity = false;
  int64_t n_features, n_hidden;
  double p = 0.05;
  TinyTMS(int64_t nf, int64_t nh, bool id, ad::DType dt, uint64_t seed = 3, double bias = 0.2)
      : identity(id), n_features(nf), n_hidden(nh) {
    ad::Rng rng(seed);
    W = ad::zeros({nh, nf}, dt);
    for (int64_t j = 0; j < nf; ++j) {
      if (nh == 2) {
        W.set_item(0 * nf + j, std::cos(2 * M_PI * j / nf));
        W.set_item(1 * nf + j, std::sin(2 * M_PI * j / nf));
      } else {
        double n2 = 0;
        std::vector<double> c(nh);
        for (auto& v : c) v = rng.normal(), n2 += v * v;
        for (int64_t i = 0; i < nh; ++i) W.set_item(i * nf + j, c[i] / std::sqrt(n2));
      }
    }
    WT = ad::zeros({nf, nh}, dt);
    for (int64_t i = 0; i < nh; ++i)
      for (int64_t j = 0; j < nf; ++j) WT.set_item(j * nh + i, W.item(i * nf + j));
    b = ad::full({nf}, -bias, dt);
    I = ad::zeros({nh, nh}, dt);
    for (int64_t i = 0; i < nh; ++i) I.set_item(i * nh + i, 1.0);
  }
  decomp::Target target() const {
    decomp::Target t;
    t.name = "tiny_tms";
    t.dtype = W.dtype();
    t.n_features = n_features;
    t.layers.push_back({"linear1", W, false, ""});
    if (identity) t.layers.push_back({"hidden_layers.0", I, false, ""});
    t.layers.push_back({"linear2", WT, false, "linear1"});
    const TinyTMS self = *this;
    t.forward = [self](const decomp::Batch& bt, models::ForwardHooks* hk) {
      ad::Tensor h = models::apply_linear(hk, "linear1", bt.x, self.W);
      if (self.identity) h = models::apply_linear(hk, "hidden_layers.0", h, self.I);
      return ad::relu(models::apply_linear(hk, "linear2", h, self.WT, self.b));
    };
    const double prob = p;
    const int64_t nf = n_features;
    const ad::DType dt = W.dtype();
    t.sample = [prob, nf, dt](int64_t B, ad::Rng& rng) {
      decomp::Batch bt;
      bt.size = B;
      bt.x = ad::zeros({B, nf}, dt);
      for (int64_t i = 0; i < B * nf; ++i)
        if (rng.uniform() < prob) bt.x.set_item(i, rng.uniform());
      return bt;
    };
    return t;
  }
};

}  // namespace spd_test
