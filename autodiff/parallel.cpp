#include "autodiff/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace ad {

namespace {

// Persistent workers that sleep until a job is posted. One job at a time (the engine is
// single-threaded, so only one caller posts).
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  void run(int n_chunks, int threads, ChunkFn fn) {
    ensure_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = fn;
      n_chunks_ = n_chunks;
      next_.store(0);
      job_workers_ = std::min<int>(threads - 1, (int)workers_.size());
      pending_ = job_workers_;
      ++generation_;
    }
    wake_.notify_all();
    work();  // the caller takes chunks too
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return pending_ == 0; });
  }

 private:
  void work() {
    for (int c; (c = next_.fetch_add(1)) < n_chunks_;) fn_(c);
  }
  void ensure_workers(int n) {
    while ((int)workers_.size() < n) workers_.emplace_back([this, id = (int)workers_.size()] { loop(id); });
  }
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return stop_ || (generation_ != seen && id < job_workers_); });
        if (stop_) return;
        seen = generation_;
      }
      work();
      {
        std::lock_guard<std::mutex> lk(mu_);
        --pending_;
      }
      done_.notify_one();
    }
  }
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  ChunkFn fn_{nullptr, nullptr};
  int n_chunks_ = 0;
  int job_workers_ = 0;  // workers taking part in the current job (ids below this)
  int pending_ = 0;      // of those, how many have not finished it
  uint64_t generation_ = 0;
  std::atomic<int> next_{0};
  bool stop_ = false;
};

int initial_threads() {
  if (const char* e = std::getenv("PD_NUM_THREADS")) {
    const int n = std::atoi(e);
    if (n >= 1) return std::min(n, 8);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return (int)std::min<unsigned>(hw == 0 ? 1 : hw, 8);
}

int g_threads = initial_threads();

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

int num_threads() { return g_threads; }
void set_num_threads(int n) { g_threads = std::max(1, std::min(n, 8)); }

// Set while this thread runs a chunk: a parallel_chunks call from inside a chunk (a gemm in
// a chunked kernel) runs its chunks in order on that thread instead of waiting on the pool.
thread_local bool t_in_chunk = false;

void parallel_chunks(int n_chunks, ChunkFn fn) {
  const int threads = std::min(g_threads, n_chunks);
  if (threads <= 1 || t_in_chunk) {
    for (int c = 0; c < n_chunks; ++c) fn(c);
    return;
  }
  auto marked = [fn](int c) {
    t_in_chunk = true;
    fn(c);
    t_in_chunk = false;
  };
  pool().run(n_chunks, threads, ChunkFn{&marked, [](void* o, int c) { (*static_cast<decltype(marked)*>(o))(c); }});
}

}  // namespace ad
