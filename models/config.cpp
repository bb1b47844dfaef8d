#include "models/config.hpp"

#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>

#include "autodiff/fileio.hpp"
#include "autodiff/json_depth.hpp"

namespace models {

static const char* type_name(const json& v) {
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  if (v.is_object()) return "object";
  return "null";
}

std::string shown(const json& v) { return ad::clip_for_message(v.dump()); }

ConfigSection::ConfigSection(const json& j, std::string source, std::string path)
    : j_(j.is_null() ? json::object() : j), source_(std::move(source)), path_(std::move(path)) {
  if (!j_.is_object())
    throw ConfigError(source_ + ": " + (path_.empty() ? std::string("top level") : path_) +
                      ": expected an object, got " + type_name(j_));
}

void ConfigSection::error(const std::string& key, const std::string& what) const {
  throw ConfigError(source_ + ": " + ad::clip_for_message(key_path(key)) + ": " + what);
}

bool ConfigSection::has(const std::string& key) const { return j_.contains(key); }

const json& ConfigSection::value(const std::string& key) {
  if (!j_.contains(key)) error(key, "required key is missing");
  used_.insert(key);
  return j_.at(key);
}

int64_t ConfigSection::get_int(const std::string& key) {
  const json& v = value(key);
  // 1e4 written as a float is accepted when it is a whole number: configs are hand-written.
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d == (double)(int64_t)d) return (int64_t)d;
  }
  error(key, std::string("expected an integer, got ") + type_name(v) + " " + shown(v));
}
int64_t ConfigSection::get_int(const std::string& key, int64_t def) { return has(key) ? get_int(key) : def; }

double ConfigSection::get_double(const std::string& key) {
  const json& v = value(key);
  if (!v.is_number()) error(key, std::string("expected a number, got ") + type_name(v) + " " + shown(v));
  return v.get<double>();
}
double ConfigSection::get_double(const std::string& key, double def) { return has(key) ? get_double(key) : def; }

bool ConfigSection::get_bool(const std::string& key, bool def) {
  if (!has(key)) return def;
  const json& v = value(key);
  if (!v.is_boolean()) error(key, std::string("expected true/false, got ") + type_name(v) + " " + shown(v));
  return v.get<bool>();
}

std::string ConfigSection::get_string(const std::string& key) {
  const json& v = value(key);
  if (!v.is_string()) error(key, std::string("expected a string, got ") + type_name(v) + " " + shown(v));
  return v.get<std::string>();
}
std::string ConfigSection::get_string(const std::string& key, const std::string& def) {
  return has(key) ? get_string(key) : def;
}

std::vector<double> ConfigSection::get_doubles(const std::string& key, const std::vector<double>& def) {
  if (!has(key)) return def;
  const json& v = value(key);
  if (!v.is_array()) error(key, std::string("expected an array of numbers, got ") + type_name(v));
  std::vector<double> out;
  for (const auto& e : v) {
    if (!e.is_number()) error(key, std::string("expected an array of numbers, found ") + type_name(e));
    out.push_back(e.get<double>());
  }
  return out;
}

ConfigSection ConfigSection::section(const std::string& key) {
  if (!has(key)) return ConfigSection(json::object(), source_, key_path(key));
  const json& v = value(key);
  if (!v.is_object()) error(key, std::string("expected an object, got ") + type_name(v));
  return ConfigSection(v, source_, key_path(key));
}

json ConfigSection::get_raw(const std::string& key) { return value(key); }

void ConfigSection::accept(const std::string& key) { used_.insert(key); }

void ConfigSection::finish(const std::string& what) const {
  for (auto it = j_.begin(); it != j_.end(); ++it)
    if (!used_.count(it.key())) error(it.key(), what);
}

void read_train_schedule(ConfigSection& t, ad::TrainSchedule& s) {
  static const std::pair<const char*, const char*> renamed[] = {{"warmup_steps", "warmup_frac (a fraction of steps)"},
                                                                {"final_frac", "final_lr_frac"},
                                                                {"clip_components", "grad_clip: {\"components\": norm}"},
                                                                {"clip_ci", "grad_clip: {\"ci_fns\": norm}"}};
  for (auto& r : renamed)
    if (t.has(r.first)) t.error(r.first, std::string("this key is now spelled ") + r.second);
  s.steps = t.get_int("steps", s.steps);
  if (s.steps < 0) t.error("steps", "must be >= 0");
  s.batch_size = t.get_int("batch_size", s.batch_size);
  if (s.batch_size < 1) t.error("batch_size", "must be >= 1");
  s.lr = t.get_double("lr", s.lr);
  if (!(s.lr > 0) || !std::isfinite(s.lr)) t.error("lr", "must be a finite number > 0");
  s.schedule = t.get_string("schedule", s.schedule);
  try {
    ad::LrSchedule::parse_kind(s.schedule);
  } catch (const ad::Error& e) {
    t.error("schedule", e.what());
  }
  s.warmup_frac = t.get_double("warmup_frac", s.warmup_frac);
  if (!(s.warmup_frac >= 0 && s.warmup_frac <= 1)) t.error("warmup_frac", "must be in [0, 1]");
  s.final_lr_frac = t.get_double("final_lr_frac", s.final_lr_frac);
  if (!(s.final_lr_frac >= 0)) t.error("final_lr_frac", "must be >= 0");
  s.weight_decay = t.get_double("weight_decay", s.weight_decay);
  if (!(s.weight_decay >= 0)) t.error("weight_decay", "must be >= 0");
  std::vector<double> betas = t.get_doubles("betas", {s.beta1, s.beta2});
  if (betas.size() != 2 || !(betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1))
    t.error("betas", "must be [beta1, beta2] in [0, 1)");
  s.beta1 = betas[0];
  s.beta2 = betas[1];
  s.eps = t.get_double("eps", s.eps);
  if (!(s.eps > 0)) t.error("eps", "must be > 0");
  if (t.has("grad_clip")) {
    const json g = t.get_raw("grad_clip");
    auto norm = [&](const json& v) {
      if (!v.is_number() || !(v.get<double>() >= 0)) t.error("grad_clip", "expected a norm >= 0 (0 = off), got " + shown(v));
      return v.get<double>();
    };
    if (g.is_object())
      for (auto it = g.begin(); it != g.end(); ++it) s.grad_clip_group[it.key()] = norm(it.value());
    else
      s.grad_clip = norm(g);
  }
  s.log_every = t.get_int("log_every", s.log_every);
  if (s.log_every < 1) t.error("log_every", "must be >= 1");
  s.checkpoint_every = t.get_int("checkpoint_every", s.checkpoint_every);
  if (s.checkpoint_every < 0) t.error("checkpoint_every", "must be >= 0");
}

json train_schedule_json(const ad::TrainSchedule& s) {
  json clip = s.grad_clip;
  if (!s.grad_clip_group.empty()) clip = s.grad_clip_group;
  return json{{"steps", s.steps},
              {"batch_size", s.batch_size},
              {"lr", s.lr},
              {"schedule", s.schedule},
              {"warmup_frac", s.warmup_frac},
              {"final_lr_frac", s.final_lr_frac},
              {"weight_decay", s.weight_decay},
              {"betas", {s.beta1, s.beta2}},
              {"eps", s.eps},
              {"grad_clip", clip},
              {"log_every", s.log_every},
              {"checkpoint_every", s.checkpoint_every}};
}

json read_json_file(const std::string& path) {
  const std::string text = ad::read_file(path);
  try {
    return ad::parse_json(text, path);
  } catch (const ad::Error& e) {
    throw ConfigError(e.what());
  }
}

void write_json_atomic(const std::string& path, const json& j) { ad::write_file_atomic(path, j.dump(2) + "\n"); }

}  // namespace models
