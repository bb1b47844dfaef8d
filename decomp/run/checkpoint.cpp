#include "decomp/run/checkpoint.hpp"

#include <cstdio>

#include "autodiff/json_depth.hpp"

namespace decomp {

using nlohmann::json;

static std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
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

static std::vector<std::pair<std::string, ad::Tensor>> named_params(const Decomposition& spd) {
  std::vector<std::pair<std::string, ad::Tensor>> v;
  const std::vector<ad::Tensor> p = spd.all_params();
  const std::vector<std::string> n = spd.all_param_names();
  for (size_t i = 0; i < p.size(); ++i) v.emplace_back(n[i], p[i]);
  for (const auto& s : spd.persistent_state()) v.emplace_back(s.name, s.t);  // VPD's persistent sources
  return v;
}

void save_spd_checkpoint(const std::string& path, const Decomposition& spd, const ad::Optimizer& opt, const TrainLog& log,
                         int64_t step, double wall_s, const json& config, const std::string& target_checkpoint,
                         const std::string& fingerprint) {
  ad::save_checkpoint(path, kDecomposeCheckpointKind, named_params(spd), opt, step, log, wall_s,
                      {{"config", config.dump()},
                       {"target_checkpoint", target_checkpoint},
                       {"target_fingerprint", fingerprint}});
}

bool is_spd_checkpoint(const ad::SafeTensors& file) {
  auto fmt = file.metadata.find("format"), kind = file.metadata.find("kind");
  return fmt != file.metadata.end() && fmt->second == ad::kCheckpointFormat && kind != file.metadata.end() &&
         kind->second == kDecomposeCheckpointKind;
}

SpdCheckpoint read_spd_checkpoint(const std::string& path) { return read_spd_checkpoint(path, ad::load_safetensors(path)); }

SpdCheckpoint read_spd_checkpoint(const std::string& path, ad::SafeTensors file) {
  SpdCheckpoint ck;
  ck.file = ad::read_checkpoint(path, kDecomposeCheckpointKind, std::move(file));
  ck.config = ad::parse_json(ck.file.meta("config"), path + ": metadata 'config'");
  if (!ck.config.is_object() || (ck.config.contains("target") && !ck.config["target"].is_object()))
    ad::fail(path + ": metadata 'config' is not a decomposition config (an object)");
  ck.target_checkpoint = ck.file.meta("target_checkpoint");
  ck.target_fingerprint = ck.file.meta("target_fingerprint");
  return ck;
}

void restore_params(const SpdCheckpoint& ck, Decomposition& spd) { ad::restore_checkpoint(ck.file, named_params(spd), nullptr); }

void restore_optimizer(const SpdCheckpoint& ck, ad::Optimizer& opt) { ad::restore_checkpoint(ck.file, {}, &opt); }

}  // namespace decomp
