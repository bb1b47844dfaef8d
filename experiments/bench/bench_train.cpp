// Training-step throughput of the target models, for `pd bench`:
//   pd bench train_tiny_lm   tiny LM of experiments/configs/tiny_lm.json (d_model 128, 4 heads,
//                            2 layers, d_mlp 512, context 128, batch 32, char vocab of the
//                            built-in story corpus): one step = batch draw, forward, cross-
//                            entropy, backward, grad-norm clip, AdamW. The same step in PyTorch
//                            eager (experiments/pytorch/tiny_lm.py bench, same sizes, AdamW,
//                            best of torch.set_num_threads 1 and 2) is timed in the same run.
//   pd bench train_tms_5-2   TMS 5-2 step at batch 1024 (tokens_per_s = samples/s).
#include <cstdio>
#include <memory>
#include <unistd.h>

#include "experiments/bench/bench.hpp"
#include "models/train.hpp"

namespace {

using pd::BenchJson;

BenchJson time_training(const models::RunConfig& rc, double seconds, int64_t items_per_step) {
  ad::Rng init(0);
  std::unique_ptr<models::Model> m = models::make_model(rc.model, init);
  std::unique_ptr<models::Task> task = models::make_task(rc);
  ad::AdamW opt({ad::ParamGroup("params", m->trainable(), rc.train.grad_clip)},
                ad::AdamConfig{rc.train.lr, {0.9, 0.999}, 1e-8, rc.train.weight_decay});
  int64_t step = 0;
  auto one = [&] {
    ad::Rng rng(ad::step_seed(0, step++, 1));
    opt.zero_grad();
    ad::Tensor loss = task->loss(*m, rc.train.batch_size, rng);
    ad::backward(loss);
    opt.step(rc.train.lr);
  };
  one();  // first step allocates the pools and optimiser state
  pd::Timing t = pd::time_it(one, seconds);
  return BenchJson{{"steps_per_s", 1.0 / t.median_s},
                   {"tokens_per_s", (double)items_per_step / t.median_s},
                   {"best_steps_per_s", 1.0 / t.best_s},
                   {"ms_per_step", 1e3 * t.median_s},
                   {"reps", t.reps}};
}

BenchJson bench_tiny_lm(const pd::BenchOptions& opt) {
  models::json j = {
      {"model", {{"type", "tiny_lm"}, {"d_model", 128}, {"n_heads", 4}, {"n_layers", 2}, {"d_mlp", 512}, {"max_len", 128}}},
      {"data", {{"type", "text"}, {"corpus", "builtin:stories"}, {"tokenizer", "char"}, {"seq_len", 128}}},
      {"train", {{"steps", 1000}, {"batch_size", 32}, {"lr", 1e-3}, {"weight_decay", 0.1}, {"grad_clip", 1.0}}}};
  models::RunConfig rc = models::parse_run_config(j, "<bench train_tiny_lm>");
  const double seconds = opt.quick ? 1.0 : std::max(5.0, opt.min_seconds);
  BenchJson out = time_training(rc, seconds, 32 * 128);
  out["vocab"] = rc.model["vocab"];
  out["batch"] = 32;
  out["seq_len"] = 128;
  // PyTorch eager, same sizes, measured now (same machine load as far as possible).
  const char* py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  const std::string cmd = std::string(py) + " experiments/pytorch/tiny_lm.py bench --vocab " +
                          std::to_string(rc.model["vocab"].get<int64_t>()) +
                          " --d-model 128 --n-heads 4 --n-layers 2 --d-mlp 512 --seq-len 128 --batch 32 --seconds " +
                          std::to_string(seconds) + (opt.quick ? " --threads 1" : " --threads 1,2") + " 2>/dev/null";
  std::string text;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) text += buf;
    const int rc_py = pclose(p);
    if (rc_py == 0 && !text.empty()) {
      try {
        models::json t = models::json::parse(text);
        out["torch_steps_per_s"] = t["steps_per_s"];
        out["torch_tokens_per_s"] = t["tokens_per_s"];
        out["torch_threads"] = t["threads"];
        out["torch_tokens_per_s_by_threads"] = t["per_threads"];
        out["speedup_vs_torch"] = out["tokens_per_s"].get<double>() / t["tokens_per_s"].get<double>();
      } catch (const std::exception& e) {
        out["torch"] = std::string("unparsable output: ") + e.what();
      }
    } else {
      out["torch"] = "not measured (experiments/pytorch/tiny_lm.py failed or torch is missing; run from the repo root)";
    }
  }
  return out;
}

BenchJson bench_tms(const pd::BenchOptions& opt) {
  models::json j = {{"model", {{"type", "tms"}, {"n_features", 5}, {"n_hidden", 2}}},
                    {"data", {{"type", "sparse_features"}, {"feature_prob", 0.05}}},
                    {"train", {{"steps", 10000}, {"batch_size", 1024}, {"lr", 5e-3}}}};
  models::RunConfig rc = models::parse_run_config(j, "<bench train_tms_5-2>");
  BenchJson out = time_training(rc, opt.quick ? 0.3 : std::max(2.0, opt.min_seconds), 1024);
  out["batch"] = 1024;
  return out;
}

}  // namespace

PD_BENCH("train_tiny_lm", "tiny LM training step (config tiny_lm.json sizes): steps/s, tokens/s, vs PyTorch eager", bench_tiny_lm);
PD_BENCH("train_tms_5-2", "TMS 5-2 training step at batch 1024: steps/s, samples/s", bench_tms);
