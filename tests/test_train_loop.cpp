// The one training loop (autodiff/train_loop.hpp): per-step randomness from (seed, step), log
// rows as window means, stop + checkpoint + resume with the same bits, and the checkpoint
// file's validation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "autodiff/ops.hpp"
#include "autodiff/train_loop.hpp"

namespace {

// Least squares on a random batch of each step: w [3] towards w* = (1, -2, 0.5).
struct Quadratic {
  ad::Tensor w = ad::zeros({3}, ad::DType::f64).requires_grad_();
  std::vector<double> draws;  // the first number each step drew
  ad::Tensor step(int64_t, ad::Rng& rng, bool log, std::map<std::string, double>& v) {
    ad::Tensor x = ad::rand_normal({8, 3}, 0, 1, rng, ad::DType::f64);
    draws.push_back(x.item(0));
    ad::Tensor target = ad::matmul(x, ad::from_vector({1, -2, 0.5}, {3, 1}, ad::DType::f64));
    ad::Tensor loss = ad::mse_loss(ad::matmul(x, ad::reshape(w, {3, 1})), target);
    v["loss"] = loss.item();
    if (log) v["monitor"] = 42.0;  // reported at log steps only
    return loss;
  }
};

ad::TrainSchedule schedule() {
  ad::TrainSchedule s;
  s.steps = 20;
  s.lr = 0.05;
  s.log_every = 6;
  return s;
}

}  // namespace

TEST_CASE("train loop: rows are window means at steps 6, 12, 18, 20; randomness depends on (seed, step) only") {
  Quadratic q;
  ad::Adam opt({ad::ParamGroup("w", {q.w})});
  ad::TrainLog log;
  ad::TrainLoopOptions o;
  o.seed = 5;
  std::vector<double> losses;
  const int64_t done = ad::run_train_loop(opt, schedule(), [&](int64_t t, ad::Rng& r, bool l, std::map<std::string, double>& v) {
    ad::Tensor loss = q.step(t, r, l, v);
    losses.push_back(v["loss"]);
    return loss;
  }, log, o);
  CHECK(done == 20);
  CHECK(log.steps == std::vector<int64_t>{6, 12, 18, 20});
  double first = 0;
  for (int i = 0; i < 6; ++i) first += losses[(size_t)i];
  CHECK(log.values.at("loss")[0] == doctest::Approx(first / 6).epsilon(1e-15));
  CHECK(log.values.at("loss")[3] == doctest::Approx((losses[18] + losses[19]) / 2).epsilon(1e-15));
  CHECK(log.values.at("monitor") == std::vector<double>(4, 42.0));
  CHECK(log.values.at("lr") == std::vector<double>(4, 0.05));
  CHECK(log.values.count("grad_norm_w") == 1);
  CHECK(log.window.empty());
  // step t's generator is Rng(step_seed(seed, t, stream)), whatever ran before
  ad::Rng r7(ad::step_seed(5, 7, 1));
  CHECK(q.draws[7] == ad::rand_normal({8, 3}, 0, 1, r7, ad::DType::f64).item(0));
  CHECK(ad::step_seed(5, 7, 1) != ad::step_seed(5, 8, 1));
  CHECK(ad::step_seed(5, 7, 1) != ad::step_seed(5, 7, 2));
  CHECK(ad::step_seed(5, 7, 1) != ad::step_seed(6, 7, 1));
}

TEST_CASE("train loop: stop at 9 (inside a window), checkpoint file, resume = uninterrupted run, bit for bit") {
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_train_loop.safetensors").string();
  auto run = [&](Quadratic& q, ad::Adam& opt, ad::TrainLog& log, int64_t start, int64_t stop) {
    ad::TrainLoopOptions o;
    o.seed = 3;
    o.start_step = start;
    o.stop_after = stop;
    o.checkpoint = [&](int64_t next) { ad::save_checkpoint(path, "test", {{"w", q.w}}, opt, next, log, 1.25, {{"note", "n"}}); };
    using namespace std::placeholders;
    return ad::run_train_loop(opt, schedule(), std::bind(&Quadratic::step, &q, _1, _2, _3, _4), log, o);
  };
  Quadratic a;
  ad::Adam opt_a({ad::ParamGroup("w", {a.w})});
  ad::TrainLog log_a;
  CHECK(run(a, opt_a, log_a, 0, -1) == 20);
  Quadratic b;
  ad::Adam opt_b({ad::ParamGroup("w", {b.w})});
  ad::TrainLog log_b;
  CHECK(run(b, opt_b, log_b, 0, 9) == 9);
  const ad::Checkpoint ck = ad::read_checkpoint(path, "test");
  CHECK(ck.step == 9);
  CHECK(ck.wall_s == 1.25);
  CHECK(ck.meta("note") == "n");
  CHECK(ck.log.window.at("loss").second == 3);  // steps 6, 7, 8 of the open window
  CHECK_THROWS_WITH(ck.meta("absent"), doctest::Contains("metadata field 'absent' missing"));
  CHECK_THROWS_WITH(ad::read_checkpoint(path, "train"), doctest::Contains("a 'test' checkpoint, this run needs a 'train' one"));
  Quadratic c;
  ad::Adam opt_c({ad::ParamGroup("w", {c.w})});
  ad::restore_checkpoint(ck, {{"w", c.w}}, &opt_c);
  ad::TrainLog log_c = ck.log;
  CHECK(run(c, opt_c, log_c, ck.step, -1) == 20);
  CHECK(c.w.to_vector() == a.w.to_vector());
  CHECK(log_c.steps == log_a.steps);
  CHECK(log_c.values.at("loss") == log_a.values.at("loss"));
  // a tensor of the wrong shape is refused naming it
  ad::Tensor wrong = ad::zeros({4}, ad::DType::f64);
  CHECK_THROWS_WITH(ad::restore_checkpoint(ck, {{"w", wrong}}, nullptr), doctest::Contains("tensor 'param/w' has shape"));
  std::filesystem::remove(path);
}

TEST_CASE("train loop: a non-finite loss stops with the step and the values; grad_clip names real groups") {
  Quadratic q;
  ad::Adam opt({ad::ParamGroup("w", {q.w})});
  ad::TrainLog log;
  ad::TrainLoopOptions o;
  auto nan_at_3 = [&](int64_t t, ad::Rng& r, bool l, std::map<std::string, double>& v) {
    ad::Tensor loss = q.step(t, r, l, v);
    return t == 3 ? loss * std::nan("") : loss;
  };
  CHECK_THROWS_WITH(ad::run_train_loop(opt, schedule(), nan_at_3, log, o), doctest::Contains("training: the loss is not finite at step 3 (loss = "));
  ad::TrainSchedule s = schedule();
  s.grad_clip_group["components"] = 1.0;
  CHECK_THROWS_WITH(ad::run_train_loop(opt, s, nan_at_3, log, o), doctest::Contains("grad_clip names parameter group 'components'"));
}
