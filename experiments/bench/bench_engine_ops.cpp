// `pd bench op_allocs`: heap allocations and time of every engine op in a repeated
// forward + backward, once warmed up. The engine's promise is that a repeated training step
// allocates nothing from the heap (tensor.cpp's pools); this workload checks it op by op,
// counting both the pools' system allocations and every global operator new (see
// bench_new_count.cpp). Arguments such as axis lists and index tensors are built outside
// the measured call, so only the op itself (forward, backward, graph release) is counted.
#include <functional>
#include <utility>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "experiments/bench/bench.hpp"

namespace pd {

using json = BenchJson;

static json bench_op_allocs(const BenchOptions& opt) {
  ad::Rng rng(5);
  auto leaf = [&](ad::Shape s, double lo = -1, double hi = 1) {
    ad::Tensor t = ad::rand_uniform(s, lo, hi, rng);
    t.requires_grad_();
    return t;
  };
  // Small float32 shapes typical of the toy models: [B, T, D] activations, [D, D] weights.
  const int64_t B = 4, H = 2, T = 8, D = 16, V = 32;
  ad::Tensor x = leaf({B, D}), y = leaf({B, D}), pos = leaf({B, D}, 0.5, 2.0), w = leaf({D, D}), bias = leaf({D});
  ad::Tensor row = leaf({D}), seq = leaf({B, T, D}), q = leaf({B, H, T, D}), k = leaf({B, H, T, D}), v = leaf({B, H, T, D});
  ad::Tensor logits = leaf({B * T, V}), target_logits = ad::rand_normal({B * T, V}, 0, 1, rng);
  ad::Tensor emb = leaf({V, D}), cond = ad::rand_bernoulli({B, D}, 0.5, rng);
  std::vector<int32_t> idv((size_t)(B * T));
  for (size_t i = 0; i < idv.size(); ++i) idv[i] = (int32_t)rng.below(V);
  const ad::Indices ids(idv, ad::Shape{B, T}), targets(idv, ad::Shape{B * T});
  const std::vector<int> axis1 = {1}, perm = {0, 2, 1};
  const std::vector<ad::Tensor> parts = {x, y};

  using OpFn = std::function<ad::Tensor()>;
  const std::vector<std::pair<const char*, OpFn>> cases = {
      {"matmul", [&] { return ad::matmul(x, w); }},
      {"linear", [&] { return ad::linear(x, w, bias); }},
      {"add_broadcast", [&] { return ad::add(x, row); }},
      {"mul", [&] { return ad::mul(x, y); }},
      {"div", [&] { return ad::div(x, pos); }},
      {"exp", [&] { return ad::exp(x); }},
      {"log", [&] { return ad::log(pos); }},
      {"sqrt", [&] { return ad::sqrt(pos); }},
      {"pow", [&] { return ad::pow(pos, 1.5); }},
      {"relu", [&] { return ad::relu(x); }},
      {"gelu_tanh", [&] { return ad::gelu_tanh(x); }},
      {"gelu_erf", [&] { return ad::gelu_erf(x); }},
      {"sigmoid", [&] { return ad::sigmoid(x); }},
      {"tanh", [&] { return ad::tanh(x); }},
      {"clamp", [&] { return ad::clamp(x, -0.5, 0.5); }},
      {"lower_leaky_hard_sigmoid", [&] { return ad::lower_leaky_hard_sigmoid(x); }},
      {"upper_leaky_hard_sigmoid", [&] { return ad::upper_leaky_hard_sigmoid(x); }},
      {"where", [&] { return ad::where(cond, x, y); }},
      {"sum_axes", [&] { return ad::sum(x, axis1); }},
      {"mean", [&] { return ad::mean(x); }},
      {"max", [&] { return ad::max(x, 1); }},
      {"reshape", [&] { return ad::reshape(seq, ad::Shape{B * T, D}); }},
      {"transpose", [&] { return ad::transpose(seq, 1, 2); }},
      {"permute", [&] { return ad::permute(seq, perm); }},
      {"slice", [&] { return ad::slice(seq, 1, 2, 6); }},
      {"concat", [&] { return ad::concat(parts, 1); }},
      {"softmax", [&] { return ad::softmax(seq); }},
      {"log_softmax", [&] { return ad::log_softmax(seq); }},
      {"layer_norm", [&] { return ad::layer_norm(seq, row, row); }},
      {"rms_norm", [&] { return ad::rms_norm(seq, row); }},
      {"embedding", [&] { return ad::embedding(emb, ids); }},
      {"rope", [&] { return ad::rope(q); }},
      {"attention", [&] { return ad::attention(q, k, v, true); }},
      {"mse_loss", [&] { return ad::mse_loss(x, y); }},
      {"cross_entropy", [&] { return ad::cross_entropy(logits, targets); }},
      {"kl_divergence", [&] { return ad::kl_divergence(target_logits, logits); }},
  };
  const std::vector<ad::Tensor> all_leaves = {x, y, pos, w, bias, row, seq, q, k, v, logits, emb};
  json allocating = json::object(), us = json::object(), failed = json::object();
  const int reps = opt.quick ? 3 : 20;
  for (const auto& [name, op] : cases) {
    // forward, a scalar loss (sum of the output), backward, release: one training-like pass
    auto pass = [&] {
      ad::backward(ad::sum(op()));
    };
    try {
      for (int i = 0; i < 3; ++i) pass();  // warm-up fills the pools for these shapes
      const uint64_t a0 = ad::pool_stats().heap_allocs, n0 = new_calls();
      for (int i = 0; i < reps; ++i) pass();
      const double pool_allocs = (double)(ad::pool_stats().heap_allocs - a0) / reps;
      const double news = (double)(new_calls() - n0) / reps;
      if (pool_allocs > 0 || news > 0)
        allocating[name] = {{"pool_heap_allocs", pool_allocs},
                            {"new_calls", new_calls_counted() ? json(news) : json(nullptr)}};
      us[name] = time_it(pass, opt.min_seconds / (double)cases.size()).best_s * 1e6;
    } catch (const std::exception& e) {
      failed[name] = e.what();  // an op not yet implemented on this branch, for example
    }
    for (ad::Tensor t : all_leaves) t.zero_grad();  // a handle copy shares the gradient buffer
  }
  // topk_mask has no backward: forward only.
  {
    auto pass = [&] { ad::Tensor m = ad::topk_mask(x, 5); };
    pass();
    const uint64_t a0 = ad::pool_stats().heap_allocs, n0 = new_calls();
    for (int i = 0; i < reps; ++i) pass();
    const double pool_allocs = (double)(ad::pool_stats().heap_allocs - a0) / reps;
    const double news = (double)(new_calls() - n0) / reps;
    if (pool_allocs > 0 || news > 0)
      allocating["topk_mask"] = {{"pool_heap_allocs", pool_allocs},
                                 {"new_calls", new_calls_counted() ? json(news) : json(nullptr)}};
    us["topk_mask"] = time_it(pass, opt.min_seconds / (double)cases.size()).best_s * 1e6;
  }
  json out = {{"ops_checked", cases.size() + 1},
              {"new_calls_counted", new_calls_counted()},
              {"ops_allocating_per_pass", allocating},
              {"us_per_fwd_bwd", us}};
  if (!failed.empty()) out["failed"] = failed;
  return out;
}
PD_ENGINE_BENCH("op_allocs", "heap allocations and us per forward+backward of every op, warmed up (small shapes)",
                bench_op_allocs);

}  // namespace pd
