#include "autodiff/tensor.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace ad {

// ---- Shape ------------------------------------------------------------------------------
Shape::Shape(std::initializer_list<int64_t> dims) {
  if ((int)dims.size() > kMaxDims) fail("Shape: more than 6 dimensions");
  for (int64_t v : dims) {
    if (v < -1) fail("Shape: negative dimension");  // -1 is allowed as reshape's "infer"
    d[nd++] = v;
  }
}
Shape Shape::from_vector(const std::vector<int64_t>& dims) {
  if ((int)dims.size() > kMaxDims) fail("Shape: more than 6 dimensions");
  Shape s;
  for (int64_t v : dims) {
    if (v < 0) fail("Shape: negative dimension");
    s.d[s.nd++] = v;
  }
  return s;
}
int64_t Shape::numel() const {
  int64_t n = 1;
  bool bad = false;
  for (int i = 0; i < nd; ++i) bad |= (d[i] < 0) | __builtin_mul_overflow(n, d[i], &n);
  if (bad) fail("Shape " + str() + ": negative dimension or element count overflows int64");
  return n;
}
bool Shape::operator==(const Shape& o) const {
  if (nd != o.nd) return false;
  for (int i = 0; i < nd; ++i)
    if (d[i] != o.d[i]) return false;
  return true;
}
std::string Shape::str() const {
  std::ostringstream s;
  s << "[";
  for (int i = 0; i < nd; ++i) s << (i ? ", " : "") << d[i];
  s << "]";
  return s.str();
}

void fail(const std::string& msg) { throw Error(msg); }

int64_t first_non_finite(const void* p, int64_t n, DType t) {
  int64_t bad = -1;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    const T* x = static_cast<const T*>(p);
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) { bad = i; return; }
  });
  return bad;
}

int64_t first_non_finite(const Tensor& t) { return first_non_finite(t.node()->data, t.numel(), t.dtype()); }

void copy_loaded(Tensor dst, const Tensor& src, const std::string& what) {
  if (src.shape() != dst.shape()) fail(what + " has shape " + src.shape().str() + ", expected " + dst.shape().str());
  const int64_t bad = first_non_finite(src);
  if (bad >= 0) fail(what + " has a non-finite value at flat index " + std::to_string(bad));
  copy_into(dst, src);
}

std::string clip_for_message(const std::string& text, size_t max) {
  if (text.size() <= max) return text;
  return text.substr(0, max) + "... (" + std::to_string(text.size()) + " bytes)";
}
void shape_error(const char* op, const Shape& a, const Shape& b, const char* what) {
  fail(std::string(op) + ": " + what + " (shapes " + a.str() + " and " + b.str() + ")");
}

Indices::Indices(std::vector<int32_t> vals, Shape s) : v(std::move(vals)), shape(s) {
  if ((int64_t)v.size() != shape.numel())
    fail("Indices: " + std::to_string(v.size()) + " values for shape " + shape.str());
}

// ---- pools --------------------------------------------------------------------------
// Buffers are rounded up to a power of two (>= 64 bytes) and kept on one free list per
// size class; nodes have their own free list. Nothing is returned to the system, which is
// what makes a repeated step allocation-free once warmed up.
namespace {
struct Pools {
  std::vector<void*> free_buffers[64];
  std::vector<Node*> free_nodes;
  PoolStats stats;
  ~Pools() {
    for (auto& fl : free_buffers)
      for (void* p : fl) std::free(p);
    for (Node* n : free_nodes) delete n;
  }
};
Pools& pools() {
  static Pools p;
  return p;
}
// No single buffer may exceed this (1 TiB): a larger request is a corrupt or absurd size, and
// refusing it keeps size_class's loop bounded.
// 4 GiB: far above any toy model here, low enough that a size typed wrong fails at once
// instead of filling memory with a random initialisation.
constexpr size_t kMaxBufferBytes = (size_t)1 << 32;
int size_class(size_t bytes) {
  int c = 6;  // 64 bytes
  while (((size_t)1 << c) < bytes) ++c;
  return c;
}
}  // namespace

void* pool_alloc(size_t bytes) {
  if (bytes > kMaxBufferBytes)
    fail("pool_alloc: refusing a " + std::to_string(bytes) + "-byte buffer (limit 2^32 bytes)");
  Pools& P = pools();
  int c = size_class(bytes ? bytes : 1);
  size_t rounded = (size_t)1 << c;
  P.stats.bytes_in_use += rounded;
  if (P.stats.bytes_in_use > P.stats.peak_bytes) P.stats.peak_bytes = P.stats.bytes_in_use;
  auto& fl = P.free_buffers[c];
  if (!fl.empty()) {
    void* p = fl.back();
    fl.pop_back();
    ++P.stats.pool_hits;
    return p;
  }
  ++P.stats.heap_allocs;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) fail("pool_alloc: out of memory allocating " + std::to_string(rounded) + " bytes");
  return p;
}

void pool_free(void* p, size_t bytes) {
  if (!p) return;
  Pools& P = pools();
  int c = size_class(bytes ? bytes : 1);
  P.stats.bytes_in_use -= (size_t)1 << c;
  P.free_buffers[c].push_back(p);
}

PoolStats pool_stats() { return pools().stats; }

Node* new_node() {
  Pools& P = pools();
  Node* n;
  if (!P.free_nodes.empty()) {
    n = P.free_nodes.back();
    P.free_nodes.pop_back();
    ++P.stats.pool_hits;
  } else {
    n = new Node();
    ++P.stats.heap_allocs;
  }
  return n;
}

// Releasing a node drops its references to inputs, which may release them in turn. A
// work-list instead of recursion keeps this safe for arbitrarily long chains.
void release_node(Node* n) {
  static thread_local std::vector<Node*> pending;
  static thread_local bool draining = false;
  pending.push_back(n);
  if (draining) return;
  draining = true;
  while (!pending.empty()) {
    Node* m = pending.back();
    pending.pop_back();
    for (int i = 0; i < m->n_inputs; ++i) m->inputs[i].reset();
    m->saved[0].reset();
    m->saved[1].reset();
    m->base.reset();
    if (m->owns_data) pool_free(m->data, m->bytes());
    pool_free(m->grad, m->bytes());
    pool_free(m->scratch, m->bytes());
    if (m->saved_index_buf) pool_free(m->saved_index_buf, (size_t)m->index_count * 4);
    *m = Node();  // back to a clean state (no heap work: all members are trivial/empty)
    pools().free_nodes.push_back(m);
  }
  draining = false;
}

// ---- Tensor handle ----------------------------------------------------------------------
Tensor::Tensor(Node* n) : n_(n) {
  if (n_) ++n_->refcount;
}
Tensor::Tensor(const Tensor& o) : n_(o.n_) {
  if (n_) ++n_->refcount;
}
Tensor& Tensor::operator=(const Tensor& o) {
  if (o.n_) ++o.n_->refcount;
  reset();
  n_ = o.n_;
  return *this;
}
Tensor& Tensor::operator=(Tensor&& o) noexcept {
  if (this != &o) {
    Node* old = n_;
    n_ = o.n_;
    o.n_ = nullptr;
    if (old && --old->refcount == 0) release_node(old);
  }
  return *this;
}
Tensor::~Tensor() { reset(); }
void Tensor::reset() {
  if (n_) {
    Node* n = n_;
    n_ = nullptr;
    if (--n->refcount == 0) release_node(n);
  }
}

static Node* checked(Node* n) {
  if (!n) fail("use of an undefined Tensor");
  return n;
}
const Shape& Tensor::shape() const { return checked(n_)->shape; }
int Tensor::dim() const { return checked(n_)->shape.nd; }
int64_t Tensor::size(int i) const { return checked(n_)->shape[i]; }
int64_t Tensor::numel() const { return checked(n_)->shape.numel(); }
DType Tensor::dtype() const { return checked(n_)->dtype; }
void* Tensor::raw() const { return checked(n_)->data; }
bool Tensor::requires_grad() const { return checked(n_)->requires_grad; }
bool Tensor::is_leaf() const { return checked(n_)->is_leaf; }
const char* Tensor::op_name() const { return checked(n_)->op; }

Tensor& Tensor::requires_grad_(bool on) {
  if (!checked(n_)->is_leaf)
    fail(std::string("requires_grad_: only leaves can be marked (this is the output of '") +
         n_->op + "'; use detach() first)");
  n_->requires_grad = on;
  return *this;
}

double Tensor::item(int64_t i) const {
  if (i < 0 || i >= numel()) fail("item: index " + std::to_string(i) + " out of range for " + shape().str());
  return dtype() == DType::f32 ? (double)static_cast<float*>(n_->data)[i]
                               : static_cast<double*>(n_->data)[i];
}
void Tensor::set_item(int64_t i, double v) {
  if (i < 0 || i >= numel()) fail("set_item: index " + std::to_string(i) + " out of range for " + shape().str());
  if (dtype() == DType::f32) static_cast<float*>(n_->data)[i] = (float)v;
  else static_cast<double*>(n_->data)[i] = v;
}
std::vector<double> Tensor::to_vector() const {
  std::vector<double> v((size_t)numel());
  for (int64_t i = 0; i < numel(); ++i) v[(size_t)i] = item(i);
  return v;
}

Tensor Tensor::grad() const {
  Node* n = checked(n_);
  if (!n->grad) return Tensor();
  // A view node sharing the gradient buffer: its data pointer is the grad buffer, it owns
  // nothing and keeps `n` alive through `base`.
  Node* v = new_node();
  v->shape = n->shape;
  v->dtype = n->dtype;
  v->data = n->grad;
  v->owns_data = false;
  v->op = "grad_view";
  v->base = *this;
  return Tensor(v);
}
void Tensor::zero_grad() {
  Node* n = checked(n_);
  if (n->grad) std::memset(n->grad, 0, n->bytes());
}
void Tensor::set_grad(const Tensor& g) {
  Node* n = checked(n_);
  if (g.shape() != n->shape) shape_error("set_grad", n->shape, g.shape(), "gradient shape differs");
  if (!n->grad) n->grad = pool_alloc(n->bytes());
  Tensor view = grad();
  copy_into(view, g);
}
void Tensor::clear_grad() {
  Node* n = checked(n_);
  pool_free(n->grad, n->bytes());
  n->grad = nullptr;
}

// ---- creation ---------------------------------------------------------------------------
Tensor empty(const Shape& s, DType t) {
  for (int i = 0; i < s.nd; ++i)
    if (s.d[i] < 0) fail("empty: negative dimension in shape " + s.str());
  size_t bytes = 0;
  if (__builtin_mul_overflow((uint64_t)s.numel(), (uint64_t)dtype_size(t), &bytes) || bytes > kMaxBufferBytes)
    fail("empty: shape " + s.str() + " needs " + std::to_string(s.numel()) + " x " + std::to_string(dtype_size(t)) +
         " bytes, over the 2^32-byte limit for one tensor");
  Node* n = new_node();
  n->shape = s;
  n->dtype = t;
  n->data = pool_alloc(n->bytes());
  return Tensor(n);
}
Tensor zeros(const Shape& s, DType t) {
  Tensor x = empty(s, t);
  std::memset(x.raw(), 0, x.node()->bytes());
  return x;
}
Tensor full(const Shape& s, double v, DType t) {
  Tensor x = empty(s, t);
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    T* p = x.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = (T)v;
  });
  return x;
}
Tensor ones(const Shape& s, DType t) { return full(s, 1.0, t); }
Tensor scalar(double v, DType t) { return full(Shape{}, v, t); }
Tensor from_vector(const std::vector<double>& v, const Shape& s, DType t) {
  if ((int64_t)v.size() != s.numel())
    fail("from_vector: " + std::to_string(v.size()) + " values for shape " + s.str());
  Tensor x = empty(s, t);
  for (int64_t i = 0; i < x.numel(); ++i) x.set_item(i, v[(size_t)i]);
  return x;
}
void copy_into(Tensor& dst, const Tensor& src) {
  if (dst.shape() != src.shape()) shape_error("copy_into", dst.shape(), src.shape(), "shapes differ");
  if (dst.dtype() == src.dtype()) {
    std::memcpy(dst.raw(), src.raw(), src.node()->bytes());
    return;
  }
  dispatch(dst.dtype(), [&](auto zd) {
    using TD = decltype(zd);
    dispatch(src.dtype(), [&](auto zs) {
      using TS = decltype(zs);
      TD* d = dst.data<TD>();
      const TS* s = src.data<TS>();
      for (int64_t i = 0; i < src.numel(); ++i) d[i] = (TD)s[i];
    });
  });
}
Tensor clone(const Tensor& x) { return to_dtype(x, x.dtype()); }
Tensor to_dtype(const Tensor& x, DType t) {
  Tensor y = empty(x.shape(), t);
  copy_into(y, x);
  return y;
}

// ---- grad mode --------------------------------------------------------------------------
static thread_local bool g_grad_enabled = true;
bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev; }
EnableGradGuard::EnableGradGuard() : prev(g_grad_enabled) { g_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { g_grad_enabled = prev; }

}  // namespace ad
