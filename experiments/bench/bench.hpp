// Benchmark registry for `pd bench` (experiments/bench/cmd_bench.cpp). Figures only: a workload
// measures and reports, it never asserts.
//
// Any file can add a workload; it then appears in `pd bench --list` and runs with
// `pd bench <name>` (or `pd bench --all`):
//
//   #include "experiments/bench/bench.hpp"
//   static pd::BenchJson bench_train_tiny_lm(const pd::BenchOptions& opt) {
//     pd::Timing t = pd::time_it([&] { one_training_step(); }, opt.min_seconds);
//     return {{"steps_per_s", 1.0 / t.median_s}, {"ms_per_step", 1e3 * t.median_s}};
//   }
//   PD_BENCH("train_tiny_lm", "steps/s of the tiny LM training step", bench_train_tiny_lm);
//
// The returned object is printed as one JSON line, with "bench": <name> and "max_rss_kb"
// added; return an array of objects to print several lines (e.g. one per size).
// PD_ENGINE_BENCH registers a workload that `pd bench` without arguments also runs (the
// engine's own figures); use PD_BENCH for everything else.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pd {

struct BenchOptions {
  double min_seconds = 0.5;  // time each measured piece for at least this long
  bool quick = false;        // smaller sizes / fewer repetitions (used by the tests)
};

using BenchJson = nlohmann::ordered_json;  // keeps the fields in the order written
using BenchFn = BenchJson (*)(const BenchOptions&);

struct Bench {
  std::string summary;
  BenchFn fn;
  bool engine_default;  // run by `pd bench` with no name
};

std::map<std::string, Bench>& bench_registry();

struct BenchRegistration {
  BenchRegistration(const char* name, const char* summary, BenchFn fn, bool engine_default) {
    bench_registry()[name] = Bench{summary, fn, engine_default};
  }
};

// Runs one registered workload and returns its output lines (each a JSON object with
// "bench" and "max_rss_kb" added). Throws ad::Error for an unknown name.
std::vector<BenchJson> run_bench(const std::string& name, const BenchOptions& opt);

// ---- measurement helpers ------------------------------------------------------------------
struct Timing {
  double best_s = 0;    // fastest single call
  double median_s = 0;  // median call
  int64_t reps = 0;
};

// Calls fn() once to warm up, then repeatedly until min_seconds have passed (and at least
// min_reps calls); reports the per-call best and median. The machine is shared, so the
// best is the figure least disturbed by other processes; the median shows the spread.
template <class F>
Timing time_it(F&& fn, double min_seconds, int64_t min_reps = 3) {
  using clock = std::chrono::steady_clock;
  fn();
  std::vector<double> samples;
  const auto start = clock::now();
  while ((int64_t)samples.size() < min_reps ||
         std::chrono::duration<double>(clock::now() - start).count() < min_seconds) {
    const auto t0 = clock::now();
    fn();
    samples.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    if (samples.size() > 1000000) break;
  }
  Timing t;
  t.reps = (int64_t)samples.size();
  std::sort(samples.begin(), samples.end());
  t.best_s = samples.front();
  t.median_s = samples[samples.size() / 2];
  return t;
}

// Like time_it for two functions, alternating single calls of each (in alternating order),
// so that both see the same machine load (for "A vs B" ratios on a shared machine).
template <class F, class G>
void time_pair(F&& f, G&& g, double min_seconds, Timing& tf, Timing& tg, int64_t min_reps = 3) {
  using clock = std::chrono::steady_clock;
  f();
  g();
  std::vector<double> sf, sg;
  const auto start = clock::now();
  while ((int64_t)sf.size() < min_reps ||
         std::chrono::duration<double>(clock::now() - start).count() < min_seconds) {
    // Which call goes first alternates: the first of a pair can pay for waking BLAS
    // threads or refilling caches that the second then finds ready.
    const bool f_first = sf.size() % 2 == 0;
    auto t0 = clock::now();
    if (f_first) f(); else g();
    auto t1 = clock::now();
    if (f_first) g(); else f();
    auto t2 = clock::now();
    const double first = std::chrono::duration<double>(t1 - t0).count();
    const double second = std::chrono::duration<double>(t2 - t1).count();
    sf.push_back(f_first ? first : second);
    sg.push_back(f_first ? second : first);
    if (sf.size() > 1000000) break;
  }
  for (auto* p : {&sf, &sg}) std::sort(p->begin(), p->end());
  tf = Timing{sf.front(), sf[sf.size() / 2], (int64_t)sf.size()};
  tg = Timing{sg.front(), sg[sg.size() / 2], (int64_t)sg.size()};
}

// Peak resident set size of this process so far (getrusage ru_maxrss), in KiB.
int64_t max_rss_kb();

// Number of global operator new calls so far in this process. The counting operator new
// is only compiled in when AddressSanitizer is off (ASan supplies its own); then
// new_calls_counted() is false and new_calls() stays 0.
uint64_t new_calls();
bool new_calls_counted();

}  // namespace pd

#define PD_BENCH_CAT2(a, b) a##b
#define PD_BENCH_CAT(a, b) PD_BENCH_CAT2(a, b)
#define PD_BENCH(name, summary, fn) \
  static ::pd::BenchRegistration PD_BENCH_CAT(pd_bench_registration_, __LINE__)(name, summary, fn, false)
#define PD_ENGINE_BENCH(name, summary, fn) \
  static ::pd::BenchRegistration PD_BENCH_CAT(pd_bench_registration_, __LINE__)(name, summary, fn, true)
