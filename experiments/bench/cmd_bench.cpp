// `pd bench`: performance figures (never assertions), one JSON line per workload.
//
//   pd bench                 the engine workloads below (sgemm, tape_overhead, mlp_train_step, memory)
//   pd bench NAME...         the named workloads (any registered with PD_BENCH / PD_ENGINE_BENCH)
//   pd bench --all           every registered workload
//   pd bench --list          names and summaries
//   --quick                  smaller sizes and shorter timings; --min-seconds S per measurement
//   --out FILE               also write the lines to FILE (atomically)
//   --profile                per-op forward/backward wall time of each workload, on stderr
//
// Targets the engine is held to (figures are printed; judging them is left to the reader):
// matmul through the engine within 5% of direct OpenBLAS at 256^3 and above; tape
// bookkeeping under 1 us per op; no heap allocation in a warmed-up training step.
#include <cblas.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "autodiff/fileio.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/optim.hpp"
#include "autodiff/parallel.hpp"
#include "autodiff/random.hpp"
#include "experiments/bench/bench.hpp"
#include "experiments/cli.hpp"

namespace pd {

using json = BenchJson;

std::map<std::string, Bench>& bench_registry() {
  static std::map<std::string, Bench> registry;  // function-local: safe static-init order
  return registry;
}

int64_t max_rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return (int64_t)ru.ru_maxrss;  // Linux reports KiB
}

std::vector<json> run_bench(const std::string& name, const BenchOptions& opt) {
  auto it = bench_registry().find(name);
  if (it == bench_registry().end())
    ad::fail("unknown benchmark '" + name + "' (pd bench --list shows them)");
  json r = it->second.fn(opt);
  std::vector<json> lines;
  if (r.is_array())
    for (json& x : r) lines.push_back(std::move(x));
  else
    lines.push_back(std::move(r));
  for (json& l : lines) {
    json out = {{"bench", name}};
    for (auto& [k, v] : l.items()) out[k] = v;  // "bench" first, then the workload's fields
    out["max_rss_kb"] = max_rss_kb();
    l = std::move(out);
  }
  return lines;
}

// ---- engine workloads -----------------------------------------------------------------------

// C = A B for square float32 matrices, through ad::matmul (forward, no tape: the inputs
// need no gradient) and through cblas_sgemm into a preallocated buffer, alternating the two
// so both see the same machine load. The engine's extra cost is the result allocation
// (a pool hit after the first call), shape checks and the Tensor handle.
static json bench_sgemm(const BenchOptions& opt) {
  json lines = json::array();
  std::vector<int64_t> sizes = {64, 256, 1024};
  if (opt.quick) sizes = {64, 256};
  ad::Rng rng(1);
  for (int64_t n : sizes) {
    ad::Tensor A = ad::rand_normal({n, n}, 0, 1, rng), B = ad::rand_normal({n, n}, 0, 1, rng);
    std::vector<float> C((size_t)(n * n));
    const float *pa = A.data<float>(), *pb = B.data<float>();
    // The engine runs OpenBLAS single-threaded under its own pool (autodiff/ops_matmul.cpp);
    // the reference is OpenBLAS with its own threads, as many as the pool has.
    auto engine = [&] {
      openblas_set_num_threads(1);
      ad::Tensor c = ad::matmul(A, B);
    };
    auto direct = [&] {
      openblas_set_num_threads(ad::num_threads());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, pa, (int)n, pb, (int)n,
                  0.0f, C.data(), (int)n);
    };
    // Alternate single calls so both sides see the same (shared, fluctuating) machine.
    Timing te, td;
    time_pair(engine, direct, opt.min_seconds, te, td);
    openblas_set_num_threads(1);
    const double flop = 2.0 * (double)n * (double)n * (double)n;
    lines.push_back({{"n", n},
                     {"engine_gflops", flop / te.best_s * 1e-9},
                     {"blas_gflops", flop / td.best_s * 1e-9},
                     {"engine_over_blas", td.best_s / te.best_s},
                     {"engine_over_blas_median", td.median_s / te.median_s},
                     {"engine_us", te.best_s * 1e6},
                     {"blas_us", td.best_s * 1e6},
                     {"engine_median_us", te.median_s * 1e6},
                     {"blas_median_us", td.median_s * 1e6},
                     {"pairs", te.reps},
                     {"threads", ad::num_threads()}});
  }
  return lines;
}
PD_ENGINE_BENCH("sgemm", "float32 matmul GFLOP/s at 64/256/1024: ad::matmul vs cblas_sgemm", bench_sgemm);

// A chain of N one-element adds: the arithmetic is one flop, so the time is the engine's
// per-op bookkeeping (node from the pool, refcounts, recording inputs; in backward the
// topological sort, gradient buffers, and releasing the graph).
// Two lengths: 1,000 ops fit in cache; 20,000 (about 10 MB of nodes and buffers) do not,
// which is closer to a large model's graph.
static json bench_tape(const BenchOptions& opt) {
  json lines = json::array();
  std::vector<int> lengths = {1000, 20000};
  if (opt.quick) lengths = {1000};
  for (const int N : lengths) {
    ad::Tensor x = ad::ones({1});
    x.requires_grad_();
    const ad::Tensor c = ad::full({1}, 1e-3);
    auto chain = [&] {
      ad::Tensor y = x;
      for (int i = 0; i < N; ++i) y = ad::add(y, c);
      return y;
    };
    const double share = opt.min_seconds / 3 / lengths.size();
    Timing fwd = time_it([&] { chain(); }, share);  // record + release
    Timing fwd_bwd = time_it(
        [&] {
          ad::backward(chain());
          x.zero_grad();
        },
        share);
    Timing nograd = time_it(
        [&] {
          ad::NoGradGuard ng;
          chain();
        },
        share);
    const uint64_t allocs0 = ad::pool_stats().heap_allocs, new0 = new_calls();
    ad::backward(chain());
    const uint64_t allocs = ad::pool_stats().heap_allocs - allocs0, news = new_calls() - new0;
    auto ns = [&](const Timing& t) { return t.best_s / N * 1e9; };
    lines.push_back({{"ops", N},
                     {"fwd_bwd_ns_per_op", ns(fwd_bwd)},
                     {"fwd_recorded_ns_per_op", ns(fwd)},
                     {"fwd_nograd_ns_per_op", ns(nograd)},
                     {"recording_ns_per_op", ns(fwd) - ns(nograd)},
                     {"fwd_bwd_median_ns_per_op", fwd_bwd.median_s / N * 1e9},
                     {"pool_heap_allocs_per_chain", allocs},
                     {"new_calls_per_chain", new_calls_counted() ? json(news) : json(nullptr)}});
  }
  return lines;
}
PD_ENGINE_BENCH("tape_overhead", "ns per op of a chain of 1-element adds (forward, backward, release)", bench_tape);

// One training step of a 3-layer float32 MLP (64 -> 128 -> 128 -> 16, ReLU, batch 128, MSE,
// AdamW): steps/s, and allocations per step once warmed up, counted two ways: the engine
// pools' heap allocations and every global operator new call in the process.
static json bench_mlp(const BenchOptions& opt) {
  const int64_t B = 128, D = 64, H = 128, O = 16;
  ad::Rng rng(2);
  ad::Tensor X = ad::rand_normal({B, D}, 0, 1, rng), Y = ad::rand_normal({B, O}, 0, 1, rng);
  auto param = [&](ad::Shape s, double scale) {
    ad::Tensor p = ad::rand_normal(s, 0, scale, rng);
    p.requires_grad_();
    return p;
  };
  ad::Tensor W1 = param({H, D}, 0.125), b1 = param({H}, 0.01), W2 = param({H, H}, 0.088), b2 = param({H}, 0.01),
             W3 = param({O, H}, 0.088), b3 = param({O}, 0.01);
  ad::AdamW opt_adam({{"mlp", {W1, b1, W2, b2, W3, b3}}}, ad::AdamConfig{1e-3, {0.9, 0.999}, 1e-8, 0.01});
  double loss = 0;
  auto step = [&] {
    opt_adam.zero_grad();
    ad::Tensor h = ad::relu(ad::linear(X, W1, b1));
    h = ad::relu(ad::linear(h, W2, b2));
    ad::Tensor l = ad::mse_loss(ad::linear(h, W3, b3), Y);
    loss = l.item();
    ad::backward(l);
    opt_adam.step();
  };
  for (int i = 0; i < 5; ++i) step();  // warm-up: pools and optimiser state fill up
  const int counted = opt.quick ? 20 : 200;
  const uint64_t allocs0 = ad::pool_stats().heap_allocs, new0 = new_calls();
  for (int i = 0; i < counted; ++i) step();
  const double allocs = (double)(ad::pool_stats().heap_allocs - allocs0) / counted;
  const double news = (double)(new_calls() - new0) / counted;
  Timing t = time_it(step, opt.min_seconds);
  return {{"batch", B},
          {"layers", "64-128-128-16"},
          {"steps_per_s", 1.0 / t.median_s},
          {"us_per_step_best", t.best_s * 1e6},
          {"us_per_step_median", t.median_s * 1e6},
          {"pool_heap_allocs_per_step", allocs},
          {"new_calls_per_step", new_calls_counted() ? json(news) : json(nullptr)},
          {"final_loss", loss}};
}
PD_ENGINE_BENCH("mlp_train_step", "steps/s and allocations per step of a small MLP training step (AdamW)", bench_mlp);

static json bench_memory(const BenchOptions&) {
  const ad::PoolStats s = ad::pool_stats();
  return {{"pool_peak_bytes", s.peak_bytes},
          {"pool_bytes_in_use", s.bytes_in_use},
          {"pool_heap_allocs", s.heap_allocs},
          {"pool_hits", s.pool_hits}};
}
PD_ENGINE_BENCH("memory", "peak RSS and engine pool statistics of this process so far", bench_memory);

// Per-op table of the profiled run (all repetitions, warm-up included): share of the op
// time, calls, mean microseconds per forward and backward call.
static void print_op_profile(const std::string& name) {
  std::vector<ad::OpTime> t = ad::op_profile();
  double total = 0;
  for (const ad::OpTime& e : t) total += e.fwd_s + e.bwd_s;
  std::fprintf(stderr, "op profile of %s (%.3f s in ops)\n%-28s %7s %10s %10s %10s\n", name.c_str(), total, "op",
               "share", "calls", "fwd_us", "bwd_us");
  for (const ad::OpTime& e : t)
    std::fprintf(stderr, "%-28s %6.1f%% %10lld %10.1f %10.1f\n", e.op.c_str(), 100 * (e.fwd_s + e.bwd_s) / total,
                 (long long)e.fwd_calls, e.fwd_calls ? 1e6 * e.fwd_s / e.fwd_calls : 0.0,
                 e.bwd_calls ? 1e6 * e.bwd_s / e.bwd_calls : 0.0);
}

// ---- the command --------------------------------------------------------------------------------
static int cmd_bench(int argc, char** argv) {
  CLI::App app{"performance figures, one JSON line per workload (figures only, no assertions)", "pd bench"};
  std::vector<std::string> names;
  bool list = false, all = false;
  BenchOptions opt;
  std::string out;
  app.add_option("names", names, "workloads to run (default: the engine workloads)");
  app.add_flag("--list", list, "list the registered workloads");
  app.add_flag("--all", all, "run every registered workload");
  app.add_flag("--quick", opt.quick, "smaller sizes and shorter timings");
  app.add_option("--min-seconds", opt.min_seconds, "time each measurement for at least this long")
      ->check(CLI::PositiveNumber);
  app.add_option("--out", out, "also write the JSON lines to this file");
  bool profile = false;
  app.add_flag("--profile", profile, "print per-op forward/backward time of each workload to stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (opt.quick && app.count("--min-seconds") == 0) opt.min_seconds = 0.05;
  if (list) {
    for (const auto& [name, b] : bench_registry())
      std::printf("  %-20s %s%s\n", name.c_str(), b.summary.c_str(), b.engine_default ? "  [default]" : "");
    return 0;
  }
  if (names.empty()) {
    for (const auto& [name, b] : bench_registry())
      if (all || b.engine_default) names.push_back(name);
    // "memory" reports the whole run's peak, so it goes last
    auto m = std::find(names.begin(), names.end(), "memory");
    if (m != names.end()) std::rotate(m, m + 1, names.end());
  }
  for (const std::string& n : names)
    if (!bench_registry().count(n)) ad::fail("unknown benchmark '" + n + "' (pd bench --list shows them)");
  std::string text;
  for (const std::string& n : names) {
    ad::reset_op_profile();
    ad::set_op_profile(profile);
    for (const json& line : run_bench(n, opt)) {
      const std::string s = line.dump();
      std::printf("%s\n", s.c_str());
      std::fflush(stdout);
      text += s + "\n";
    }
    ad::set_op_profile(false);
    if (profile) print_op_profile(n);
  }
  if (!out.empty()) ad::write_file_atomic(out, text);
  return 0;
}
PD_COMMAND(bench, "performance figures (engine workloads; --list for all)", cmd_bench);

}  // namespace pd
