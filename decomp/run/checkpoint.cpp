#include "decomp/run/checkpoint.hpp"

#include <cstdio>
#include <cstring>

namespace decomp {

using nlohmann::json;

static std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}
static uint64_t parse_hex64(const json& j, const std::string& where) {
  if (!j.is_string() || j.get<std::string>().size() != 16)
    ad::fail(where + ": expected a 16-digit hex string, got " + j.dump());
  const std::string s = j.get<std::string>();
  uint64_t v = 0;
  for (char c : s) {
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) ad::fail(where + ": not a hex string: " + s);
    v = v * 16 + (uint64_t)d;
  }
  return v;
}

std::string target_fingerprint(const models::Model& m) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 offset basis
  auto mix = [&](const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& p : m.parameters()) {
    mix(p.name.data(), p.name.size());
    const int dt = (int)p.value.dtype();
    mix(&dt, sizeof dt);
    for (int64_t d = 0; d < p.value.dim(); ++d) {
      const int64_t s = p.value.size(d);
      mix(&s, sizeof s);
    }
    mix(p.value.raw(), (size_t)p.value.numel() * ad::dtype_size(p.value.dtype()));
  }
  return hex64(h);
}

void save_spd_checkpoint(const std::string& path, const SPD& spd, const ad::Adam& opt, const ad::Rng& rng,
                         const TrainLog& log, int64_t step, double wall_s, const json& config,
                         const std::string& target_checkpoint, const std::string& fingerprint) {
  std::map<std::string, ad::Tensor> t;
  const std::vector<ad::Tensor> p = spd.all_params();
  const std::vector<std::string> n = spd.all_param_names();
  json param_steps = json::array();
  for (size_t i = 0; i < p.size(); ++i) {
    t["param/" + n[i]] = p[i];
    t["adam.exp_avg/" + n[i]] = opt.exp_avg(i);
    t["adam.exp_avg_sq/" + n[i]] = opt.exp_avg_sq(i);
    param_steps.push_back(opt.param_steps(i));
  }
  const ad::Rng::State rs = rng.state();
  uint64_t spare_bits;
  std::memcpy(&spare_bits, &rs.spare, sizeof spare_bits);
  json jrng = {{"s", {hex64(rs.s[0]), hex64(rs.s[1]), hex64(rs.s[2]), hex64(rs.s[3])}},
               {"has_spare", rs.has_spare},
               {"spare_bits", hex64(spare_bits)}};
  json jlog = {{"steps", log.steps}, {"values", log.values}, {"seconds", log.seconds}};
  ad::save_safetensors(path, t,
                       {{"format", kSpdCheckpointFormat},
                        {"step", std::to_string(step)},
                        {"config", config.dump()},
                        {"target_checkpoint", target_checkpoint},
                        {"target_fingerprint", fingerprint},
                        {"wall_s", json(wall_s).dump()},
                        {"param_steps", param_steps.dump()},
                        {"rng", jrng.dump()},
                        {"log", jlog.dump()}});
}

SpdCheckpoint read_spd_checkpoint(const std::string& path) { return read_spd_checkpoint(path, ad::load_safetensors(path)); }

SpdCheckpoint read_spd_checkpoint(const std::string& path, ad::SafeTensors file) {
  SpdCheckpoint ck;
  ck.path = path;
  ck.file = std::move(file);
  const auto& md = ck.file.metadata;
  auto field = [&](const std::string& k) -> const std::string& {
    auto it = md.find(k);
    if (it == md.end()) ad::fail(path + ": not an SPD checkpoint (metadata field '" + k + "' missing)");
    return it->second;
  };
  if (field("format") != kSpdCheckpointFormat)
    ad::fail(path + ": not an SPD checkpoint (metadata format '" + field("format") + "', expected " + kSpdCheckpointFormat + ")");
  auto parse = [&](const std::string& k) {
    try {
      return json::parse(field(k));
    } catch (const json::exception& e) {
      ad::fail(path + ": metadata field '" + k + "' is not valid JSON (" + e.what() + ")");
    }
  };
  try {
    const json step = parse("step"), wall = parse("wall_s"), steps = parse("param_steps"), rng = parse("rng"),
               lg = parse("log");
    ck.config = parse("config");
    ck.step = step.get<int64_t>();
    ck.wall_s = wall.get<double>();
    ck.param_steps = steps.get<std::vector<int64_t>>();
    for (int i = 0; i < 4; ++i) ck.rng.s[i] = parse_hex64(rng.at("s").at(i), path + ": metadata 'rng'");
    ck.rng.has_spare = rng.at("has_spare").get<bool>();
    const uint64_t bits = parse_hex64(rng.at("spare_bits"), path + ": metadata 'rng'");
    std::memcpy(&ck.rng.spare, &bits, sizeof bits);
    ck.log.steps = lg.at("steps").get<std::vector<int64_t>>();
    ck.log.values = lg.at("values").get<std::map<std::string, std::vector<double>>>();
    ck.log.seconds = lg.at("seconds").get<double>();
  } catch (const json::exception& e) {
    ad::fail(path + ": malformed SPD checkpoint metadata (" + e.what() + ")");
  }
  ck.target_checkpoint = field("target_checkpoint");
  ck.target_fingerprint = field("target_fingerprint");
  if (ck.step < 0) ad::fail(path + ": metadata 'step' is negative");
  return ck;
}

static const ad::Tensor& tensor_of(const SpdCheckpoint& ck, const std::string& name, const ad::Tensor& like) {
  auto it = ck.file.tensors.find(name);
  if (it == ck.file.tensors.end()) ad::fail(ck.path + ": tensor '" + name + "' missing");
  if (it->second.shape() != like.shape())
    ad::fail(ck.path + ": tensor '" + name + "' has shape " + it->second.shape().str() + ", the run needs " +
             like.shape().str());
  if (it->second.dtype() != like.dtype()) ad::fail(ck.path + ": tensor '" + name + "' has another dtype than the run's");
  return it->second;
}

void restore_params(const SpdCheckpoint& ck, SPD& spd) {
  std::vector<ad::Tensor> p = spd.all_params();
  const std::vector<std::string> n = spd.all_param_names();
  for (size_t i = 0; i < p.size(); ++i) ad::copy_into(p[i], tensor_of(ck, "param/" + n[i], p[i]));
}

void restore_optimizer(const SpdCheckpoint& ck, const SPD& spd, ad::Adam& opt) {
  const std::vector<ad::Tensor> p = spd.all_params();
  const std::vector<std::string> n = spd.all_param_names();
  if (ck.param_steps.size() != p.size())
    ad::fail(ck.path + ": metadata 'param_steps' has " + std::to_string(ck.param_steps.size()) + " entries, the run has " +
             std::to_string(p.size()) + " tensors");
  for (size_t i = 0; i < p.size(); ++i) {
    ad::Tensor m1 = opt.exp_avg(i), m2 = opt.exp_avg_sq(i);
    ad::copy_into(m1, tensor_of(ck, "adam.exp_avg/" + n[i], m1));
    ad::copy_into(m2, tensor_of(ck, "adam.exp_avg_sq/" + n[i], m2));
    opt.set_param_steps(i, ck.param_steps[i]);
  }
}

}  // namespace decomp
