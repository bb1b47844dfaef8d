#include "autodiff/train_loop.hpp"

#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "autodiff/json_depth.hpp"

namespace ad {

using nlohmann::json;

uint64_t step_seed(uint64_t seed, int64_t step, uint64_t stream) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)step * 0xBF58476D1CE4E5B9ULL + stream * 0x94D049BB133111EBULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

LrSchedule TrainSchedule::lr_schedule() const {
  LrSchedule s;
  s.kind = LrSchedule::parse_kind(schedule);
  s.final_frac = final_lr_frac;
  s.warmup_frac = warmup_frac;
  return s;
}

double TrainSchedule::clip_for(const std::string& group) const {
  auto it = grad_clip_group.find(group);
  return it == grad_clip_group.end() ? grad_clip : it->second;
}

static void add_row(TrainLog& log, int64_t steps_done, std::map<std::string, double>& row) {
  for (auto& kv : log.window) row[kv.first] = kv.second.first / (double)kv.second.second;
  log.window.clear();
  log.steps.push_back(steps_done);
  for (auto& kv : row) log.values[kv.first].push_back(kv.second);
}

void fail_non_finite(const std::string& what, int64_t step, const std::map<std::string, double>& values,
                     const std::function<void()>& replay) {
  std::string msg = what + ": the loss is not finite at step " + std::to_string(step) + " (";
  bool first = true;
  for (const auto& kv : values) {
    msg += (first ? "" : ", ") + kv.first + " = " + std::to_string(kv.second);
    first = false;
  }
  msg += ")";
  try {
    NanGuardScope guard;
    replay();
  } catch (const Error& e) {
    fail(msg + "; first non-finite op: " + e.what());
  }
  fail(msg + "; replayed under the NaN guard, no op produced a non-finite value");
}

int64_t run_train_loop(Optimizer& opt, const TrainSchedule& s, const TrainStepFn& step_fn, TrainLog& log,
                       const TrainLoopOptions& o) {
  if (o.start_step < 0 || o.start_step > s.steps)
    fail("training: resume step " + std::to_string(o.start_step) + " outside [0, " + std::to_string(s.steps) + "]");
  if (s.log_every < 1) fail("training: log_every must be >= 1");
  for (auto& kv : s.grad_clip_group) {
    bool found = false;
    for (const ParamGroup& g : opt.groups()) found = found || g.name == kv.first;
    if (!found) fail("training: grad_clip names parameter group '" + kv.first + "', which this run does not have");
  }
  const int64_t end = o.stop_after >= 0 ? std::min(o.stop_after, s.steps) : s.steps;
  const LrSchedule sched = s.lr_schedule();
  const double seconds_before = log.seconds;  // time of the steps before a resume
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds_now = [&] {
    return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  int64_t step = o.start_step;
  for (; step < end; ++step) {
    const bool log_now = (step + 1) % s.log_every == 0 || step + 1 == s.steps;
    Rng rng(step_seed(o.seed, step, o.stream));
    const double lr = sched.lr_at(s.lr, step, s.steps);
    opt.zero_grad();
    std::map<std::string, double> values;
    Tensor loss = step_fn(step, rng, log_now, values);
    const double lv = loss.item();
    if (!std::isfinite(lv)) {
      if (!values.count("loss")) values["loss"] = lv;
      fail_non_finite(o.what, step, values, [&] {
        Rng replay_rng(step_seed(o.seed, step, o.stream));
        std::map<std::string, double> ignored;
        step_fn(step, replay_rng, false, ignored);
      });
    }
    backward(loss);
    if (o.after_backward) o.after_backward();
    opt.step(lr);
    if (o.after_step) o.after_step();
    for (auto& kv : values) {
      auto& w = log.window[kv.first];
      w.first += kv.second;
      ++w.second;
    }
    if (log_now) {
      std::map<std::string, double> row;
      row["lr"] = lr;
      for (size_t g = 0; g < opt.groups().size(); ++g) row["grad_norm_" + opt.groups()[g].name] = opt.last_grad_norm(g);
      row["time_s"] = seconds_now();
      add_row(log, step + 1, row);
      if (o.on_log) o.on_log(step + 1, row);
    }
    const bool stopping = step + 1 == end && end < s.steps;
    if (o.checkpoint &&
        (stopping || (s.checkpoint_every > 0 && (step + 1) % s.checkpoint_every == 0 && step + 1 < s.steps))) {
      log.seconds = seconds_now();
      o.checkpoint(step + 1);
    }
  }
  log.seconds = seconds_now();
  return step;
}

// ---- checkpoints -------------------------------------------------------------------------------

static json log_json(const TrainLog& l) {
  json w = json::object();
  for (auto& kv : l.window) w[kv.first] = {kv.second.first, kv.second.second};
  return {{"steps", l.steps}, {"values", l.values}, {"seconds", l.seconds}, {"window", w}};
}

void save_checkpoint(const std::string& path, const std::string& kind,
                     const std::vector<std::pair<std::string, Tensor>>& params, const Optimizer& opt, int64_t step,
                     const TrainLog& log, double wall_s, const std::map<std::string, std::string>& meta) {
  std::map<std::string, Tensor> t;
  for (auto& p : params) t["param/" + p.first] = p.second;
  for (auto& kv : opt.state()) t["optim/" + kv.first] = kv.second;
  std::map<std::string, std::string> md = meta;
  md["format"] = kCheckpointFormat;
  md["kind"] = kind;
  md["step"] = std::to_string(step);
  md["log"] = log_json(log).dump();
  md["wall_s"] = json(wall_s).dump();
  save_safetensors(path, t, md);
}

const std::string& Checkpoint::meta(const std::string& key) const {
  auto it = file.metadata.find(key);
  if (it == file.metadata.end()) fail(path + ": checkpoint metadata field '" + key + "' missing");
  return it->second;
}

Checkpoint read_checkpoint(const std::string& path, const std::string& kind) {
  return read_checkpoint(path, kind, load_safetensors(path));
}

Checkpoint read_checkpoint(const std::string& path, const std::string& kind, SafeTensors file) {
  Checkpoint ck;
  ck.path = path;
  ck.file = std::move(file);
  auto fmt = ck.file.metadata.find("format");
  if (fmt == ck.file.metadata.end() || fmt->second != kCheckpointFormat)
    fail(path + ": not a pd checkpoint (metadata format '" + (fmt == ck.file.metadata.end() ? "" : fmt->second) +
         "', expected " + kCheckpointFormat + ")");
  ck.kind = ck.meta("kind");
  if (ck.kind != kind) fail(path + ": a '" + ck.kind + "' checkpoint, this run needs a '" + kind + "' one");
  const std::string& st = ck.meta("step");
  if (st.empty() || st.size() > 18 || st.find_first_not_of("0123456789") != std::string::npos)
    fail(path + ": metadata 'step' must be a non-negative integer, got '" + st + "'");
  ck.step = std::stoll(st);
  const json wall = parse_json(ck.meta("wall_s"), path + ": metadata 'wall_s'");
  const json l = parse_json(ck.meta("log"), path + ": metadata 'log'");
  try {
    ck.wall_s = wall.get<double>();
    ck.log.steps = l.at("steps").get<std::vector<int64_t>>();
    ck.log.values = l.at("values").get<std::map<std::string, std::vector<double>>>();
    ck.log.seconds = l.at("seconds").get<double>();
    for (auto& kv : l.at("window").items())
      ck.log.window[kv.key()] = {kv.value().at(0).get<double>(), kv.value().at(1).get<int64_t>()};
  } catch (const json::exception& e) {
    fail(path + ": malformed checkpoint metadata 'log' or 'wall_s' (" + e.what() + ")");
  }
  for (const auto& kv : ck.log.values)
    if (kv.second.size() > ck.log.steps.size()) fail(path + ": metadata 'log' has more '" + kv.first + "' values than rows");
  return ck;
}

void restore_checkpoint(const Checkpoint& ck, const std::vector<std::pair<std::string, Tensor>>& params, Optimizer* opt) {
  for (auto& p : params) {
    auto it = ck.file.tensors.find("param/" + p.first);
    if (it == ck.file.tensors.end()) fail(ck.path + ": tensor 'param/" + p.first + "' missing");
    if (it->second.dtype() != p.second.dtype())
      fail(ck.path + ": tensor 'param/" + p.first + "' has another dtype than the run's");
    copy_loaded(p.second, it->second, ck.path + ": tensor 'param/" + p.first + "'");
  }
  if (!opt) return;
  std::map<std::string, Tensor> state;
  for (auto& kv : ck.file.tensors)
    if (kv.first.rfind("optim/", 0) == 0) {
      if (first_non_finite(kv.second) >= 0)
        fail(ck.path + ": tensor '" + clip_for_message(kv.first) + "' has a non-finite value");
      state[kv.first.substr(6)] = kv.second;
    }
  try {
    opt->load_state(state);
  } catch (const Error& e) {
    fail(ck.path + ": optimiser state: " + e.what());
  }
}

}  // namespace ad
