#include "models/train.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <unistd.h>

#include "autodiff/fileio.hpp"
#include "models/transformers.hpp"

namespace models {

// ---- config ---------------------------------------------------------------------------------

json DataConfig::to_json() const {
  json j{{"type", type}};
  if (type == "sparse_features") {
    json s = sparse.to_json();
    for (auto it = s.begin(); it != s.end(); ++it) j[it.key()] = it.value();
    j["labels"] = labels;
    j["importance_decay"] = importance_decay;
  } else if (type == "induction") {
    j["half_len"] = half_len;
  } else if (type == "text") {
    j["corpus"] = corpus;
    j["tokenizer"] = tokenizer;
    j["seq_len"] = seq_len;
    j["val_fraction"] = val_fraction;
  }
  return j;
}

json TrainConfig::to_json() const {
  json j = train_schedule_json(*this);
  j["seed"] = seed;
  j["eval_batches"] = eval_batches;
  j["dtype"] = dtype;
  return j;
}

json RunConfig::to_json() const { return json{{"model", model}, {"data", data.to_json()}, {"train", train.to_json()}}; }

static ad::DType parse_dtype(ConfigSection& s, const std::string& key, const std::string& v) {
  if (v == "float32") return ad::DType::f32;
  if (v == "float64") return ad::DType::f64;
  s.error(key, "must be \"float32\" or \"float64\", got \"" + v + "\"");
}

TextDataset make_run_dataset(const DataConfig& d) { return make_text_dataset(d.corpus, d.tokenizer, d.val_fraction); }

// The "train" section of a run config: the shared schedule (steps, batch_size and lr
// required) plus seed, eval_batches and dtype.
static void read_train_config(ConfigSection t, TrainConfig& tc) {
  if (!t.has("steps")) t.error("steps", "required key is missing");
  if (!t.has("batch_size")) t.error("batch_size", "required key is missing");
  if (!t.has("lr")) t.error("lr", "required key is missing");
  read_train_schedule(t, tc);
  const int64_t seed = t.get_int("seed", 0);
  if (seed < 0) t.error("seed", "must be >= 0");
  tc.seed = (uint64_t)seed;
  tc.eval_batches = t.get_int("eval_batches", tc.eval_batches);
  tc.dtype = t.get_string("dtype", tc.dtype);
  parse_dtype(t, "dtype", tc.dtype);
  if (tc.eval_batches < 1) t.error("eval_batches", "must be >= 1");
  t.finish();
}

RunConfig parse_run_config(const json& j, const std::string& source) {
  RunConfig rc;
  rc.source = source;
  ConfigSection top(j, source, "");
  read_train_config(top.section("train"), rc.train);

  // model (parsed fully by make_model below; here only what the data section needs)
  if (!j.contains("model")) top.error("model", "required key is missing");
  json mj = top.get_raw("model");
  if (!mj.is_object() || !mj.contains("type") || !mj["type"].is_string())
    top.error("model", "must be an object with a string \"type\"");
  const std::string mtype = mj["type"];

  // data
  ConfigSection d = top.section("data");
  DataConfig& dc = rc.data;
  dc.type = d.get_string("type");
  if (dc.type == "sparse_features") {
    if (mtype != "tms" && mtype != "resid_mlp" && mtype != "mlp")
      d.error("type", "sparse_features data needs a vector model (tms, resid_mlp, mlp), the model is " + mtype);
    int64_t nf = mj.contains("n_features") && mj["n_features"].is_number_integer() ? mj["n_features"].get<int64_t>() : 0;
    if (mtype == "mlp" && mj.contains("sizes") && mj["sizes"].is_array() && !mj["sizes"].empty() && mj["sizes"][0].is_number())
      nf = mj["sizes"][0].get<int64_t>();
    dc.sparse = SparseFeatureSpec::from(d, nf);
    dc.labels = d.get_string("labels", mtype == "resid_mlp" ? "x_plus_relu" : "identity");
    if (dc.labels != "identity" && dc.labels != "x_plus_relu")
      d.error("labels", "must be \"identity\" or \"x_plus_relu\", got \"" + dc.labels + "\"");
    dc.importance_decay = d.get_double("importance_decay", 1.0);
    if (!(dc.importance_decay > 0 && dc.importance_decay <= 1)) d.error("importance_decay", "must be in (0, 1]");
  } else if (dc.type == "induction") {
    if (mtype != "induction" && mtype != "tiny_lm") d.error("type", "induction data needs a sequence model, the model is " + mtype);
    dc.half_len = d.get_int("half_len", dc.half_len);
    if (dc.half_len < 2) d.error("half_len", "must be >= 2");
  } else if (dc.type == "text") {
    if (mtype != "tiny_lm" && mtype != "induction") d.error("type", "text data needs a sequence model, the model is " + mtype);
    dc.corpus = d.get_string("corpus", dc.corpus);
    dc.tokenizer = d.get_string("tokenizer", dc.tokenizer);
    if (dc.tokenizer != "char" && dc.tokenizer != "byte") d.error("tokenizer", "must be \"char\" or \"byte\"");
    dc.seq_len = d.get_int("seq_len", dc.seq_len);
    dc.val_fraction = d.get_double("val_fraction", dc.val_fraction);
    if (dc.seq_len < 1) d.error("seq_len", "must be >= 1");
    if (!(dc.val_fraction > 0 && dc.val_fraction < 1)) d.error("val_fraction", "must be in (0, 1)");
    TextDataset ds;  // built here so that a bad corpus is an error naming the file and key
    try {
      ds = make_run_dataset(dc);
    } catch (const ConfigError&) {
      throw;
    } catch (const ad::Error& e) {
      d.error("corpus", e.what());
    }
    if (mtype == "tiny_lm") {
      // The vocabulary comes from the tokenizer; a config that states one must agree.
      if (mj.contains("vocab") && mj["vocab"] != ds.tok.vocab_size())
        top.error("model", "vocab " + shown(mj["vocab"]) + " differs from the " + dc.tokenizer + " tokenizer's " +
                               std::to_string(ds.tok.vocab_size()) + " tokens of corpus " + dc.corpus);
      mj["vocab"] = ds.tok.vocab_size();
      mj["tokenizer"] = ds.tok.to_json();
    }
  } else {
    d.error("type", "unknown data type '" + dc.type + "' (sparse_features, induction, text)");
  }
  d.finish();
  top.finish();

  // Validate + resolve the model config (fills defaults) by building it once.
  ad::Rng rng(0);
  std::unique_ptr<Model> m;
  try {
    m = make_model(mj, rng, ad::DType::f32, source);
  } catch (const ConfigError&) {
    throw;
  } catch (const ad::Error& e) {  // a size over the tensor limit
    top.error("model", e.what());
  }
  rc.model = m->config();
  if (dc.type == "induction") {
    const int64_t T = 2 * dc.half_len - 1;
    if (rc.model.value("max_len", (int64_t)0) < T)
      top.error("data", "half_len " + std::to_string(dc.half_len) + " needs model.max_len >= " + std::to_string(T));
  }
  if (dc.type == "text" && rc.model.value("max_len", (int64_t)0) < dc.seq_len)
    top.error("data", "seq_len " + std::to_string(dc.seq_len) + " exceeds model.max_len");
  return rc;
}

RunConfig load_run_config(const std::string& path) { return parse_run_config(read_json_file(path), path); }

// ---- tasks ----------------------------------------------------------------------------------

namespace {

constexpr uint64_t kTrainStream = 1, kEvalStream = 2;

class SparseTask : public Task {
 public:
  explicit SparseTask(const RunConfig& c, ad::DType dt) : d_(c.data), dtype_(dt) {
    if (d_.importance_decay != 1.0) {
      std::vector<double> w((size_t)d_.sparse.n_features);
      for (size_t i = 0; i < w.size(); ++i) w[i] = std::pow(d_.importance_decay, (double)i);
      importance_ = ad::from_vector(w, {(int64_t)w.size()}, dt);  // [n_features]
    }
  }
  ad::Tensor loss(Model& m, int64_t batch, ad::Rng& rng, int64_t* items) override {
    ad::Tensor x = sample_sparse_features(d_.sparse, batch, rng, dtype_);
    ad::Tensor y = d_.labels == "identity" ? x : resid_mlp_labels(x);
    if (items) *items += batch;
    ad::Tensor pred = m.forward(x);
    if (!importance_.defined()) return ad::mse_loss(pred, y);
    // sum_i I_i (pred_i - y_i)^2 averaged over batch and features (Elhage et al.'s loss)
    return ad::mean(ad::square(pred - y) * importance_);
  }
  json evaluate(Model& m, int64_t batch, int64_t n_batches) override {
    ad::NoGradGuard ng;
    ad::Rng rng(ad::step_seed(0, 0, kEvalStream));
    double tot = 0;
    for (int64_t i = 0; i < n_batches; ++i) tot += loss(m, batch, rng, nullptr).item();
    return json{{"eval_loss", tot / (double)n_batches}};
  }

 private:
  DataConfig d_;
  ad::DType dtype_;
  ad::Tensor importance_;
};

class InductionTask : public Task {
 public:
  InductionTask(const RunConfig& c) : half_len_(c.data.half_len), vocab_(c.model.at("vocab").get<int64_t>()) {}
  bool sequence_task() const override { return true; }
  ad::Tensor loss(Model& m, int64_t batch, ad::Rng& rng, int64_t* items) override {
    InductionBatch b = sample_induction(vocab_, half_len_, batch, rng);
    if (items) *items += b.inputs.numel();
    ad::Tensor logits = m.forward_tokens(b.inputs);  // [B, T-1, V]
    return ad::cross_entropy(ad::reshape(logits, {-1, vocab_}), b.targets);
  }
  json evaluate(Model& m, int64_t batch, int64_t n_batches) override {
    ad::NoGradGuard ng;
    ad::Rng rng(ad::step_seed(0, 0, kEvalStream));
    double loss = 0;
    int64_t correct = 0, scored = 0;
    for (int64_t i = 0; i < n_batches; ++i) {
      InductionBatch b = sample_induction(vocab_, half_len_, batch, rng);
      ad::Tensor logits = ad::reshape(m.forward_tokens(b.inputs), {-1, vocab_});  // [N, V]
      loss += ad::cross_entropy(logits, b.targets).item();
      const int64_t N = logits.size(0);
      ad::dispatch(logits.dtype(), [&](auto z) {
        using T = decltype(z);
        const T* L = logits.data<T>();
        for (int64_t r = 0; r < N; ++r) {
          if (!b.scored[(size_t)r]) continue;
          int64_t best = 0;
          for (int64_t v = 1; v < vocab_; ++v)
            if (L[r * vocab_ + v] > L[r * vocab_ + best]) best = v;
          correct += best == b.targets.v[(size_t)r];
          ++scored;
        }
      });
    }
    return json{{"eval_loss", loss / (double)n_batches},
                {"induction_accuracy", (double)correct / (double)scored},
                {"chance_accuracy", 1.0 / (double)vocab_}};
  }

 private:
  int64_t half_len_, vocab_;
};

class TextTask : public Task {
 public:
  TextTask(const RunConfig& c) : d_(c.data), ds_(make_run_dataset(c.data)), vocab_(c.model.at("vocab").get<int64_t>()) {
    if (ds_.tok.vocab_size() > vocab_)
      ad::fail("text task: tokenizer has " + std::to_string(ds_.tok.vocab_size()) + " tokens, the model only " +
               std::to_string(vocab_));
  }
  bool sequence_task() const override { return true; }
  ad::Tensor loss(Model& m, int64_t batch, ad::Rng& rng, int64_t* items) override {
    TextBatch b = sample_text(ds_.train, d_.seq_len, batch, rng);
    if (items) *items += b.inputs.numel();
    return ad::cross_entropy(ad::reshape(m.forward_tokens(b.inputs), {-1, vocab_}), b.targets);
  }
  json evaluate(Model& m, int64_t batch, int64_t n_batches) override {
    ad::NoGradGuard ng;
    ad::Rng rng(ad::step_seed(0, 0, kEvalStream));
    double loss = 0;
    for (int64_t i = 0; i < n_batches; ++i) {
      TextBatch b = sample_text(ds_.val, d_.seq_len, batch, rng);
      loss += ad::cross_entropy(ad::reshape(m.forward_tokens(b.inputs), {-1, vocab_}), b.targets).item();
    }
    // A fixed-seed greedy-free sample, so metrics.json shows what the model writes.
    std::vector<int32_t> prompt = ds_.tok.encode("Once upon a time");
    ad::Rng srng(ad::step_seed(0, 0, 3));
    const int64_t ctx = m.config().value("max_len", d_.seq_len);
    std::string sample = ds_.tok.decode(sample_tokens(m, prompt, 200, 0.8, ctx, srng));
    return json{{"val_loss", loss / (double)n_batches},
                {"unigram_entropy", unigram_entropy(ds_.train, ds_.tok.vocab_size())},
                {"vocab", ds_.tok.vocab_size()},
                {"train_tokens", (int64_t)ds_.train.size()},
                {"sample", "Once upon a time" + sample}};
  }

 private:
  DataConfig d_;
  TextDataset ds_;
  int64_t vocab_;
};

}  // namespace

std::unique_ptr<Task> make_task(const RunConfig& c) {
  ad::DType dt = c.train.dtype == "float64" ? ad::DType::f64 : ad::DType::f32;
  if (c.data.type == "sparse_features") return std::unique_ptr<Task>(new SparseTask(c, dt));
  if (c.data.type == "induction") return std::unique_ptr<Task>(new InductionTask(c));
  if (c.data.type == "text") return std::unique_ptr<Task>(new TextTask(c));
  ad::fail("make_task: unknown data type '" + c.data.type + "'");
}

// ---- training loop ----------------------------------------------------------------------------

std::string curve_csv(const ad::TrainLog& log) {
  std::ostringstream o;
  o << "step,loss,lr,time_s\n";
  char buf[160];
  for (size_t i = 0; i < log.steps.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%lld,%.9g,%.9g,%.4f\n", (long long)log.steps[i], log.values.at("loss")[i],
                  log.values.at("lr")[i], log.values.at("time_s")[i]);
    o << buf;
  }
  return o.str();
}

static std::string fmt_time(double s) {
  char b[32];
  if (s < 60) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 3600) std::snprintf(b, sizeof b, "%dm%02ds", (int)(s / 60), (int)s % 60);
  else std::snprintf(b, sizeof b, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
  return b;
}


// The progress line on stderr: rewritten in place on a terminal (every 0.5 s), one line per
// 10 s otherwise; silent for runs under 2 s.
struct ProgressLine {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double last = 0;
  int64_t first_step = 0, end = 0, total = 0;
  bool tty = isatty(2);
  void update(int64_t steps_done, double loss) {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el <= 2.0 || (last != 0 && el - last < (tty ? 0.5 : 10.0))) return;
    last = el;
    const double sps = (double)(steps_done - first_step) / el;
    std::fprintf(stderr, "%sstep %lld/%lld  loss %.6g  %.1f steps/s  left %s%s", tty ? "\r" : "", (long long)steps_done,
                 (long long)total, loss, sps, fmt_time((double)(end - steps_done) / sps).c_str(), tty ? "   " : "\n");
    std::fflush(stderr);
  }
  ~ProgressLine() {
    if (tty && last > 0) std::fprintf(stderr, "\n");
  }
};

TrainResult train(const RunConfig& cfg, const TrainOptions& opts) {
  using clock = std::chrono::steady_clock;
  const TrainConfig& tc = cfg.train;
  const ad::DType dt = tc.dtype == "float64" ? ad::DType::f64 : ad::DType::f32;
  TrainResult res;
  ad::Rng init_rng(ad::step_seed(tc.seed, 0, 0));
  res.model = make_model(cfg.model, init_rng, dt, cfg.source);
  Model& m = *res.model;
  std::unique_ptr<Task> task = make_task(cfg);

  ad::AdamW opt({ad::ParamGroup("params", m.trainable(), tc.clip_for("params"))},
                ad::AdamConfig{tc.lr, {tc.beta1, tc.beta2}, tc.eps, tc.weight_decay});
  ad::TrainLoopOptions lo;
  lo.seed = tc.seed;
  lo.stream = kTrainStream;
  lo.stop_after = opts.stop_after;
  if (!opts.resume_from.empty()) lo.start_step = load_checkpoint(opts.resume_from, m, opt, res.log, cfg);
  if (!opts.out_dir.empty()) {
    ad::prepare_output_dir(opts.out_dir);
    write_json_atomic(opts.out_dir + "/config.json", cfg.to_json());
    lo.checkpoint = [&](int64_t next_step) {
      save_checkpoint(opts.out_dir + "/checkpoint.safetensors", m, opt, next_step, res.log, cfg);
    };
  }
  const int64_t end = opts.stop_after >= 0 ? std::min(opts.stop_after, tc.steps) : tc.steps;
  ProgressLine progress{clock::now(), 0, lo.start_step, end, tc.steps};
  int64_t items = 0;
  const auto t0 = clock::now();
  const int64_t steps = ad::run_train_loop(opt, tc, [&](int64_t step, ad::Rng& rng, bool, std::map<std::string, double>& v) {
    ad::Tensor loss = task->loss(m, tc.batch_size, rng, &items);
    v["loss"] = loss.item();
    if (opts.progress) progress.update(step + 1, v["loss"]);
    return loss;
  }, res.log, lo);
  res.steps_done = steps;
  res.wall_s = std::chrono::duration<double>(clock::now() - t0).count();
  const int64_t ran = steps - lo.start_step;
  res.steps_per_s = res.wall_s > 0 ? (double)ran / res.wall_s : 0;
  res.tokens_per_s = res.wall_s > 0 ? (double)items / res.wall_s : 0;

  json metrics{{"steps", steps},
               {"steps_total", tc.steps},
               {"wall_time_s", res.wall_s},
               {"steps_per_s", res.steps_per_s},
               {"n_params", m.num_params()},
               {"n_trainable_params", m.num_params(true)},
               {"seed", tc.seed}};
  if (task->sequence_task()) metrics["tokens_per_s"] = res.tokens_per_s;
  else metrics["samples_per_s"] = res.tokens_per_s;
  if (!res.log.steps.empty()) metrics["final_train_loss"] = res.log.values.at("loss").back();
  if (steps >= tc.steps) {
    json ev = task->evaluate(m, tc.batch_size, tc.eval_batches);
    for (auto it = ev.begin(); it != ev.end(); ++it) metrics[it.key()] = it.value();
  }
  res.metrics = metrics;
  if (!opts.out_dir.empty()) {
    const std::string& o = opts.out_dir;
    ad::write_file_atomic(o + "/curve.csv", curve_csv(res.log));
    write_json_atomic(o + "/model_config.json", m.config());
    if (steps >= tc.steps) {  // an early stop has written its checkpoint
      save_model(m, o + "/model.safetensors");
      write_json_atomic(o + "/metrics.json", metrics);
    }
  }
  return res;
}

}  // namespace models
