#include "autodiff/optim.hpp"

#include <cmath>
#include <cstring>

#include "autodiff/parallel.hpp"

namespace ad {

// ---- gradient norms and clipping ------------------------------------------------------------
static double sum_sq_grad(const Tensor& p) {
  double s = 0;
  if (!p.node()->grad) return 0;
  dispatch(p.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* g = p.grad_data<T>();
    for (int64_t i = 0, n = p.numel(); i < n; ++i) s += (double)g[i] * (double)g[i];
  });
  return s;
}

double grad_norm(const std::vector<Tensor>& params) {
  double s = 0;
  for (const Tensor& p : params) s += sum_sq_grad(p);
  return std::sqrt(s);
}

static void scale_grad(const Tensor& p, double c) {
  if (!p.node()->grad) return;
  dispatch(p.dtype(), [&](auto z) {
    using T = decltype(z);
    T* g = p.grad_data<T>();
    const T cc = (T)c;
    for (int64_t i = 0, n = p.numel(); i < n; ++i) g[i] *= cc;
  });
}

// `name` is a group name (group = true) or the caller's description; the message is only
// built on failure, so a normal step allocates nothing here.
static double clip_impl(const std::vector<Tensor>& params, double max_norm, const std::string& name, bool group) {
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) {
    const std::string what = group ? "group '" + name + "'" : name;
    for (size_t k = 0; k < params.size(); ++k)
      if (!std::isfinite(sum_sq_grad(params[k])))
        fail("clip_grad_norm: gradient of " + what + " parameter " + std::to_string(k) + " " +
             params[k].shape().str() + " is non-finite (norm " + std::to_string(norm) + ")");
    fail("clip_grad_norm: gradient norm of " + what + " overflowed (" + std::to_string(norm) + ")");
  }
  if (max_norm > 0 && norm > max_norm) {
    const double c = max_norm / (norm + 1e-6);
    for (const Tensor& p : params) scale_grad(p, c);
  }
  return norm;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, const std::string& what) {
  if (!(max_norm > 0)) fail("clip_grad_norm: max_norm must be > 0 for " + what);
  return clip_impl(params, max_norm, what, false);
}

// ---- schedules ------------------------------------------------------------------------------
int64_t LrSchedule::warmup_for(int64_t total_steps) const {
  if (warmup_steps > 0) return warmup_steps;
  if (warmup_frac < 0 || warmup_frac > 1) fail("LrSchedule: warmup_frac must be in [0, 1]");
  return (int64_t)std::floor(warmup_frac * (double)total_steps);
}

double LrSchedule::lr_at(double base_lr, int64_t step, int64_t total_steps) const {
  if (total_steps <= 0) fail("LrSchedule::lr_at: total_steps must be > 0");
  if (step < 0) fail("LrSchedule::lr_at: negative step");
  if (final_frac < 0) fail("LrSchedule: final_frac must be >= 0");
  const int64_t W = warmup_for(total_steps);
  if (step < W) return base_lr * (double)(step + 1) / (double)W;
  if (kind == Kind::constant) return base_lr;
  const int64_t T = total_steps - W;
  const double frac = T > 0 ? std::min(1.0, (double)(step - W) / (double)T) : 1.0;  // t / T
  const double shape = kind == Kind::linear ? 1.0 - frac : 0.5 * (1.0 + std::cos(M_PI * frac));
  return base_lr * (final_frac + (1.0 - final_frac) * shape);
}

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "constant") return Kind::constant;
  if (name == "linear") return Kind::linear;
  if (name == "cosine") return Kind::cosine;
  fail("lr schedule '" + name + "' is unknown (choose constant, linear or cosine)");
}

const char* schedule_kind_name(LrSchedule::Kind k) {
  switch (k) {
    case LrSchedule::Kind::constant: return "constant";
    case LrSchedule::Kind::linear: return "linear";
    case LrSchedule::Kind::cosine: return "cosine";
  }
  return "?";
}

// ---- optimiser base --------------------------------------------------------------------------
Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  for (const ParamGroup& g : groups_) {
    for (size_t k = 0; k < g.params.size(); ++k) {
      const Tensor& p = g.params[k];
      const std::string where = "optimiser group '" + g.name + "' parameter " + std::to_string(k);
      if (!p.defined()) fail(where + " is an undefined tensor");
      if (!p.is_leaf()) fail(where + " is not a leaf (output of '" + p.op_name() + "')");
      if (!p.requires_grad()) fail(where + " " + p.shape().str() + " does not require a gradient");
      if (!p.node()->owns_data) fail(where + " is a view; pass the tensor that owns the data");
    }
    if (g.clip_norm < 0) fail("optimiser group '" + g.name + "': clip_norm must be >= 0");
  }
  last_norms_.assign(groups_.size(), 0.0);
}

double Optimizer::group_weight_decay(const ParamGroup& g) const {
  return std::isnan(g.weight_decay) ? default_wd_ : g.weight_decay;
}

void Optimizer::step(double lr) {
  if (!std::isfinite(lr) || lr < 0) fail("optimiser step: learning rate " + std::to_string(lr) + " is not >= 0");
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    last_norms_[gi] = g.clip_norm > 0 ? clip_impl(g.params, g.clip_norm, g.name, true)
                                      : grad_norm(g.params);
  }
  size_t slot = 0;
  for (ParamGroup& g : groups_) {
    const double wd = group_weight_decay(g);
    for (Tensor& p : g.params) {
      if (p.node()->grad) update(slot, p, lr * g.lr_scale, wd);
      ++slot;
    }
  }
  ++steps_taken_;
}

void Optimizer::zero_grad() {
  for (ParamGroup& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

std::string Optimizer::slot_prefix(const char* kind, size_t slot) const {
  for (const ParamGroup& g : groups_) {
    if (slot < g.params.size()) return std::string(kind) + "." + g.name + "." + std::to_string(slot) + ".";
    slot -= g.params.size();
  }
  fail("optimiser: parameter slot out of range");
}

const Tensor& Optimizer::state_entry(const std::map<std::string, Tensor>& st, const std::string& name,
                                     const Shape& shape) {
  auto it = st.find(name);
  if (it == st.end()) fail("optimiser load_state: '" + name + "' is missing (was the state saved by the same optimiser with the same groups?)");
  if (it->second.shape() != shape)
    shape_error("optimiser load_state", it->second.shape(), shape, ("'" + name + "' has the wrong shape").c_str());
  return it->second;
}

static size_t n_params(const std::vector<ParamGroup>& groups) {
  size_t n = 0;
  for (const ParamGroup& g : groups) n += g.params.size();
  return n;
}

std::map<std::string, Tensor> Optimizer::state() const {
  return {{"optimizer.steps_taken", scalar((double)steps_taken_, DType::f64)}};
}

void Optimizer::load_state(const std::map<std::string, Tensor>& st) {
  steps_taken_ = (int64_t)state_entry(st, "optimizer.steps_taken", Shape{}).item();
}

// Integer counters travel as float64 (exact below 2^53).
static Tensor counters_tensor(const std::vector<int64_t>& v) {
  Tensor t = zeros({(int64_t)v.size()}, DType::f64);
  for (size_t i = 0; i < v.size(); ++i) t.set_item((int64_t)i, (double)v[i]);
  return t;
}

// ---- SGD ------------------------------------------------------------------------------------
SGD::SGD(std::vector<ParamGroup> groups, SgdConfig cfg) : Optimizer(std::move(groups)), cfg_(cfg) {
  if (cfg_.momentum < 0 || cfg_.momentum >= 1) fail("SGD: momentum must be in [0, 1)");
  if (cfg_.nesterov && cfg_.momentum == 0) fail("SGD: nesterov needs momentum > 0");
  default_lr_ = cfg_.lr;
  default_wd_ = cfg_.weight_decay;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) {
      momentum_.push_back(cfg_.momentum > 0 ? zeros(p.shape(), p.dtype()) : Tensor());
      has_buf_.push_back(0);
    }
}

void SGD::update(size_t slot, Tensor& p, double lr, double wd) {
  const double mu = cfg_.momentum;
  const bool first = !has_buf_[slot];
  has_buf_[slot] = 1;
  dispatch(p.dtype(), [&](auto z) {
    using T = decltype(z);
    T* w = p.data<T>();
    const T* g = p.grad_data<T>();
    T* buf = mu > 0 ? momentum_[slot].data<T>() : nullptr;
    const T tl = (T)lr, twd = (T)wd, tmu = (T)mu;
    for (int64_t i = 0, n = p.numel(); i < n; ++i) {
      T d = g[i] + twd * w[i];
      if (buf) {
        buf[i] = first ? d : tmu * buf[i] + d;
        d = cfg_.nesterov ? d + tmu * buf[i] : buf[i];
      }
      w[i] -= tl * d;
    }
  });
}

std::map<std::string, Tensor> SGD::state() const {
  std::map<std::string, Tensor> st = Optimizer::state();
  std::vector<int64_t> has(has_buf_.begin(), has_buf_.end());
  st["sgd.has_buf"] = counters_tensor(has);
  for (size_t k = 0; k < momentum_.size(); ++k)
    if (momentum_[k].defined()) st[slot_prefix("sgd", k) + "momentum"] = clone(momentum_[k]);
  return st;
}

void SGD::load_state(const std::map<std::string, Tensor>& st) {
  const Tensor& has = state_entry(st, "sgd.has_buf", Shape{(int64_t)n_params(groups_)});
  for (size_t k = 0; k < momentum_.size(); ++k) {
    if (momentum_[k].defined())
      copy_into(momentum_[k], state_entry(st, slot_prefix("sgd", k) + "momentum", momentum_[k].shape()));
    has_buf_[k] = has.item((int64_t)k) != 0;
  }
  Optimizer::load_state(st);
}

// ---- Adam / AdamW ------------------------------------------------------------------------------
Adam::Adam(std::vector<ParamGroup> groups, AdamConfig cfg) : Adam(std::move(groups), cfg, false) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamConfig cfg, bool decoupled)
    : Optimizer(std::move(groups)), cfg_(cfg), decoupled_(decoupled) {
  const char* who = decoupled ? "AdamW" : "Adam";
  if (!(cfg_.betas.first >= 0 && cfg_.betas.first < 1 && cfg_.betas.second >= 0 && cfg_.betas.second < 1))
    fail(std::string(who) + ": betas must be in [0, 1)");
  if (!(cfg_.eps >= 0)) fail(std::string(who) + ": eps must be >= 0");
  if (!(cfg_.weight_decay >= 0)) fail(std::string(who) + ": weight_decay must be >= 0");
  default_lr_ = cfg_.lr;
  default_wd_ = cfg_.weight_decay;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) {
      m_.push_back(zeros(p.shape(), p.dtype()));
      v_.push_back(zeros(p.shape(), p.dtype()));
      t_.push_back(0);
    }
}

void Adam::update(size_t slot, Tensor& p, double lr, double wd) {
  const int64_t t = ++t_[slot];
  const double b1 = cfg_.betas.first, b2 = cfg_.betas.second;
  const double bc1 = 1.0 - std::pow(b1, (double)t), bc2 = 1.0 - std::pow(b2, (double)t);
  // p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), the same arrangement as torch.optim.
  const double step_size = lr / bc1, inv_sqrt_bc2 = 1.0 / std::sqrt(bc2);
  dispatch(p.dtype(), [&](auto z) {
    using T = decltype(z);
    T* w = p.data<T>();
    const T* g = p.grad_data<T>();
    T* m = m_[slot].data<T>();
    T* v = v_[slot].data<T>();
    const T tb1 = (T)b1, tb2 = (T)b2, c1 = (T)(1 - b1), c2 = (T)(1 - b2), teps = (T)cfg_.eps;
    const T ss = (T)step_size, isb = (T)inv_sqrt_bc2;
    const T decay = (T)(1.0 - lr * wd);  // AdamW: p *= 1 - lr wd
    const T l2 = decoupled_ ? (T)0 : (T)wd;
    const bool decoupled = decoupled_;
    // Element-wise, so any split gives the same bits; large tensors (APD's 26 MB V and U)
    // are split over the thread pool.
    const int64_t n = p.numel();
    const int chunks = fixed_chunks(n, n, 16);
    parallel_chunks(chunks, [&](int c) {
      const auto [i0, i1] = chunk_range(n, chunks, c);
      for (int64_t i = i0; i < i1; ++i) {
        if (decoupled) w[i] *= decay;
        const T gi = g[i] + l2 * w[i];
        m[i] = tb1 * m[i] + c1 * gi;
        v[i] = tb2 * v[i] + c2 * gi * gi;
        w[i] -= ss * m[i] / (std::sqrt(v[i]) * isb + teps);
      }
    });
  });
}

}  // namespace ad

namespace ad {

std::map<std::string, Tensor> Adam::state() const {
  std::map<std::string, Tensor> st = Optimizer::state();
  const char* kind = decoupled_ ? "adamw" : "adam";
  st[std::string(kind) + ".param_steps"] = counters_tensor(t_);
  for (size_t k = 0; k < m_.size(); ++k) {
    st[slot_prefix(kind, k) + "exp_avg"] = clone(m_[k]);
    st[slot_prefix(kind, k) + "exp_avg_sq"] = clone(v_[k]);
  }
  return st;
}

void Adam::load_state(const std::map<std::string, Tensor>& st) {
  const char* kind = decoupled_ ? "adamw" : "adam";
  const Tensor& steps = state_entry(st, std::string(kind) + ".param_steps", Shape{(int64_t)t_.size()});
  for (size_t k = 0; k < m_.size(); ++k) {
    copy_into(m_[k], state_entry(st, slot_prefix(kind, k) + "exp_avg", m_[k].shape()));
    copy_into(v_[k], state_entry(st, slot_prefix(kind, k) + "exp_avg_sq", v_[k].shape()));
    t_[k] = (int64_t)steps.item((int64_t)k);
  }
  Optimizer::load_state(st);
}

}  // namespace ad
