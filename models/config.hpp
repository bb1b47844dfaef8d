// Strict reading of JSON configs: every key a section may hold is read through a
// ConfigSection, which remembers what it consumed; finish() then rejects any key nobody
// asked for. Errors name the file and the full key path ("tms_5-2.json: train.lr: expected
// a number, got string"), so a typo in a config never silently falls back to a default.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodiff/error.hpp"
#include "autodiff/train_loop.hpp"

namespace models {

using json = nlohmann::json;

// A config file that cannot be read or does not fit the schema.
struct ConfigError : ad::Error {
  using ad::Error::Error;
};

class ConfigSection {
 public:
  // `source` names the file (or "<string>"), `path` the section ("model", "train", ...).
  ConfigSection(const json& j, std::string source, std::string path);

  bool has(const std::string& key) const;
  // Required keys throw when absent; the defaulted overloads return `def` when absent.
  // Both throw when the key is present with the wrong type.
  int64_t get_int(const std::string& key);
  int64_t get_int(const std::string& key, int64_t def);
  double get_double(const std::string& key);
  double get_double(const std::string& key, double def);
  bool get_bool(const std::string& key, bool def);
  std::string get_string(const std::string& key);
  std::string get_string(const std::string& key, const std::string& def);
  std::vector<double> get_doubles(const std::string& key, const std::vector<double>& def);
  // A nested object section (absent -> empty object).
  ConfigSection section(const std::string& key);
  // The raw JSON value of a present key (marks it consumed); for free-form sub-objects.
  json get_raw(const std::string& key);
  // Marks a key as consumed without reading it (e.g. "type", read earlier by a factory).
  void accept(const std::string& key);
  // Throws on the first key that no get_* / accept call consumed ("<key>: <what>").
  void finish(const std::string& what = "unknown key") const;

  [[noreturn]] void error(const std::string& key, const std::string& what) const;
  const std::string& source() const { return source_; }
  const json& raw() const { return j_; }
  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

 private:
  const json& value(const std::string& key);
  json j_;
  std::string source_, path_;
  std::set<std::string> used_;
};

// The schedule keys of a "train" section (absent keys keep the values in `s`): steps,
// batch_size, lr, schedule, warmup_frac, final_lr_frac, weight_decay, betas, eps, grad_clip
// (a number, or {group: norm}), log_every, checkpoint_every. Old spellings (warmup_steps,
// final_frac, clip_components, clip_ci) are refused with an error naming the new key.
void read_train_schedule(ConfigSection& t, ad::TrainSchedule& s);
json train_schedule_json(const ad::TrainSchedule& s);

// A value as an error message shows it: its JSON, cut to 80 characters (ad::clip_for_message).
std::string shown(const json& v);

// Reads and parses a JSON file; parse errors name the file and the byte position.
json read_json_file(const std::string& path);
// Writes j (2-space indent, trailing newline) to `path` with ad::write_file_atomic.
void write_json_atomic(const std::string& path, const json& j);

}  // namespace models
