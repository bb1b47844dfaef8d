#include "models/config.hpp"

#include <fstream>
#include <sstream>

#include "autodiff/fileio.hpp"

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

ConfigSection::ConfigSection(const json& j, std::string source, std::string path)
    : j_(j.is_null() ? json::object() : j), source_(std::move(source)), path_(std::move(path)) {
  if (!j_.is_object())
    throw ConfigError(source_ + ": " + (path_.empty() ? std::string("top level") : path_) +
                      ": expected an object, got " + type_name(j_));
}

void ConfigSection::error(const std::string& key, const std::string& what) const {
  throw ConfigError(source_ + ": " + key_path(key) + ": " + what);
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
  error(key, std::string("expected an integer, got ") + type_name(v) + " " + v.dump());
}
int64_t ConfigSection::get_int(const std::string& key, int64_t def) { return has(key) ? get_int(key) : def; }

double ConfigSection::get_double(const std::string& key) {
  const json& v = value(key);
  if (!v.is_number()) error(key, std::string("expected a number, got ") + type_name(v) + " " + v.dump());
  return v.get<double>();
}
double ConfigSection::get_double(const std::string& key, double def) { return has(key) ? get_double(key) : def; }

bool ConfigSection::get_bool(const std::string& key, bool def) {
  if (!has(key)) return def;
  const json& v = value(key);
  if (!v.is_boolean()) error(key, std::string("expected true/false, got ") + type_name(v) + " " + v.dump());
  return v.get<bool>();
}

std::string ConfigSection::get_string(const std::string& key) {
  const json& v = value(key);
  if (!v.is_string()) error(key, std::string("expected a string, got ") + type_name(v) + " " + v.dump());
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

void ConfigSection::finish() const {
  for (auto it = j_.begin(); it != j_.end(); ++it)
    if (!used_.count(it.key())) error(it.key(), "unknown key");
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw ConfigError(path + ": invalid JSON: " + e.what());
  }
}

void write_json_atomic(const std::string& path, const json& j) { ad::write_file_atomic(path, j.dump(2) + "\n"); }

}  // namespace models
