// Tensor and graph node: the data structure the whole engine is built on.
//
// A Tensor is a reference-counted handle to a Node. A Node holds one N-d row-major array
// (float32 or float64, chosen at run time), an optional gradient buffer and -- when it was
// produced by an op while gradients are recorded -- the op's inputs and a pointer to its
// backward function. The graph is therefore "define-by-run": every op call appends a node
// whose inputs point back at earlier nodes; autograd.cpp walks it in reverse.
//
// Memory: nodes and array buffers come from free-list pools (tensor.cpp), so a training
// step that repeats the same shapes allocates nothing from the heap after its first pass.
// Destruction is iterative, so a 100,000-node chain is freed without deep recursion.
//
// The engine is single-threaded (BLAS may use threads inside one matmul, and a few big
// kernels split raw-memory loops over threads with ad::parallel_chunks).
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodiff/error.hpp"

namespace ad {

enum class DType : uint8_t { f32, f64 };
inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 8; }
inline const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : "float64"; }

// Calls f with a value of the C++ type matching `t` (float or double), so one templated
// kernel serves both precisions:  dispatch(t, [&](auto z) { using T = decltype(z); ... });
template <class F>
inline void dispatch(DType t, F&& f) {
  if (t == DType::f32) f(float{});
  else f(double{});
}

constexpr int kMaxDims = 6;

struct Shape {
  int nd = 0;
  int64_t d[kMaxDims] = {0, 0, 0, 0, 0, 0};

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  static Shape from_vector(const std::vector<int64_t>& dims);
  int64_t numel() const;
  int64_t operator[](int i) const { return d[i < 0 ? i + nd : i]; }
  int64_t& operator[](int i) { return d[i < 0 ? i + nd : i]; }
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::vector<int64_t> to_vector() const { return std::vector<int64_t>(d, d + nd); }
  std::string str() const;  // "[3, 5]"
};

// ad::Error and ad::fail: autodiff/error.hpp.
[[noreturn]] void shape_error(const char* op, const Shape& a, const Shape& b, const char* what);

struct Node;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Node* n);  // takes a new reference
  Tensor(const Tensor& o);
  Tensor(Tensor&& o) noexcept : n_(o.n_) { o.n_ = nullptr; }
  Tensor& operator=(const Tensor& o);
  Tensor& operator=(Tensor&& o) noexcept;
  ~Tensor();

  bool defined() const { return n_ != nullptr; }
  Node* node() const { return n_; }
  void reset();

  const Shape& shape() const;
  int dim() const;
  int64_t size(int i) const;
  int64_t numel() const;
  DType dtype() const;

  template <class T> T* data() const;       // checks the dtype
  template <class T> T* grad_data() const;  // nullptr when no gradient has been stored
  void* raw() const;

  // Element access for tests and small glue code (flat row-major index), any dtype.
  double item(int64_t flat = 0) const;
  void set_item(int64_t flat, double v);
  std::vector<double> to_vector() const;

  bool requires_grad() const;
  Tensor& requires_grad_(bool on = true);  // only on leaves
  bool is_leaf() const;
  const char* op_name() const;

  // The accumulated gradient of a leaf (an undefined Tensor before any backward). The
  // returned tensor shares the gradient buffer: writing to it writes the gradient.
  Tensor grad() const;
  void zero_grad();  // sets the stored gradient to zero (keeps the buffer)
  void set_grad(const Tensor& g);  // copies g (same shape) into the gradient buffer
  void clear_grad(); // drops the gradient buffer

 private:
  Node* n_ = nullptr;
};

using BackwardFn = void (*)(Node& out);
constexpr int kMaxInputs = 8;

struct Node {
  int32_t refcount = 0;
  Shape shape;
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool is_leaf = true;
  bool owns_data = true;        // false for views (reshape), whose data lives in `base`
  bool graph_released = false;  // set by backward(retain_graph=false)
  void* data = nullptr;
  void* grad = nullptr;         // accumulated .grad (leaves)
  void* scratch = nullptr;      // gradient during one backward pass (every node)
  const char* op = "leaf";
  BackwardFn backward = nullptr;
  int n_inputs = 0;
  Tensor inputs[kMaxInputs];
  Tensor saved[2];              // extra tensors an op keeps for its backward (masks, stats)
  Tensor base;                  // the node whose storage a view aliases
  double scalars[4] = {0, 0, 0, 0};
  int64_t ints[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t* index_data = nullptr;  // embedding: ids copied into `saved_index_buf`
  int64_t index_count = 0;
  void* saved_index_buf = nullptr;
  uint32_t visit_epoch = 0;
  uint32_t need_epoch = 0;  // grad(): set on the nodes a requested input is reachable from
  size_t bytes() const { return (size_t)shape.numel() * dtype_size(dtype); }
};

// Integer index tensor (token ids, class labels). Not differentiable, so kept separate.
struct Indices {
  std::vector<int32_t> v;
  Shape shape;
  Indices() = default;
  Indices(std::vector<int32_t> vals, Shape s);
  int64_t numel() const { return (int64_t)v.size(); }
};

// ---- creation ------------------------------------------------------------------------
Tensor empty(const Shape& s, DType t = DType::f32);  // contents unspecified
Tensor zeros(const Shape& s, DType t = DType::f32);
Tensor ones(const Shape& s, DType t = DType::f32);
Tensor full(const Shape& s, double v, DType t = DType::f32);
Tensor from_vector(const std::vector<double>& v, const Shape& s, DType t = DType::f32);
Tensor scalar(double v, DType t = DType::f32);
Tensor clone(const Tensor& x);               // deep copy, leaf, no grad
Tensor to_dtype(const Tensor& x, DType t);   // converted copy, leaf, no grad
void copy_into(Tensor& dst, const Tensor& src);  // same shape; converts dtype

// Index of the first non-finite entry of p[0..n) (float types), or -1. The NaN guard's check.
int64_t first_non_finite(const void* p, int64_t n, DType t);
int64_t first_non_finite(const Tensor& t);

// Copies a tensor read from a file into `dst` (a parameter or state of this run): its shape
// must be dst's and every value finite; the error names `what` ("<file>: tensor 'W'").
void copy_loaded(Tensor dst, const Tensor& src, const std::string& what);

// ---- gradient recording ----------------------------------------------------------------
bool grad_enabled();
struct NoGradGuard {  // ops inside this scope record nothing
  NoGradGuard();
  ~NoGradGuard();
  bool prev;
};
struct EnableGradGuard {  // ops inside this scope record, even within a NoGradGuard (inner PGD)
  EnableGradGuard();
  ~EnableGradGuard();
  bool prev;
};

// ---- pool statistics (benchmarks check that a warmed-up step allocates nothing) ---------
struct PoolStats {
  uint64_t heap_allocs = 0;  // buffers + nodes obtained from the system allocator
  uint64_t pool_hits = 0;    // requests served from a free list
  uint64_t bytes_in_use = 0;
  uint64_t peak_bytes = 0;
};
PoolStats pool_stats();
void* pool_alloc(size_t bytes);  // 64-byte aligned, from the free lists
void pool_free(void* p, size_t bytes);

// Internal: node allocation and release (used by ops and autograd).
Node* new_node();
void release_node(Node* n);

template <class T> inline DType dtype_of();
template <> inline DType dtype_of<float>() { return DType::f32; }
template <> inline DType dtype_of<double>() { return DType::f64; }

template <class T>
T* Tensor::data() const {
  if (dtype_of<T>() != dtype())
    fail(std::string("Tensor::data: tensor is ") + dtype_name(dtype()) + ", asked for " +
         dtype_name(dtype_of<T>()));
  return static_cast<T*>(n_->data);
}
template <class T>
T* Tensor::grad_data() const {
  if (dtype_of<T>() != dtype()) fail("Tensor::grad_data: dtype mismatch");
  return static_cast<T*>(n_->grad);
}

}  // namespace ad
