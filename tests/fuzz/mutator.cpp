#include "tests/fuzz/mutator.hpp"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace fuzz {

using nlohmann::json;

namespace {

uint64_t pick(ad::Rng& r, uint64_t n) { return r.below(n); }

// Text JSON cannot hold (1e999, NaN, repeated keys, deep nesting) goes in as a placeholder
// string "@@<n>@@" and is substituted after dump().
struct Raw {
  std::vector<std::string> texts;
  std::string add(std::string text) {
    texts.push_back(std::move(text));
    return "@@" + std::to_string(texts.size() - 1) + "@@";
  }
  std::string render(const json& j) const {
    std::string s = j.dump();
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string key = "\"@@" + std::to_string(i) + "@@\"";
      for (size_t at; (at = s.find(key)) != std::string::npos;) s.replace(at, key.size(), texts[i]);
    }
    return s;
  }
};

json number_value(ad::Rng& r, Raw& raw) {
  switch (pick(r, 18)) {
    case 0: return -1;
    case 1: return 0;
    case 2: return 1;
    case 3: return 2;
    case 4: return 3;
    case 5: return (int64_t)1 << 31;
    case 6: return ((int64_t)1 << 53) + 1;
    case 7: return (int64_t)1 << 62;
    case 8: return std::numeric_limits<int64_t>::max();
    case 9: return std::numeric_limits<uint64_t>::max();
    case 10: return std::numeric_limits<int64_t>::min();
    case 11: return 2.5;
    case 12: return -0.5;
    case 13: return 1e-320;
    case 14: return 1e308;
    case 15: return 1e18;
    default: {
      static const char* odd[] = {"1e999", "-1e999", "NaN", "Infinity", "-0", "1e400", "00", "0x10"};
      return raw.add(odd[pick(r, 8)]);
    }
  }
}

json any_value(ad::Rng& r, Raw& raw) {
  switch (pick(r, 12)) {
    case 0: case 1: case 2: case 3: case 4: return number_value(r, raw);
    case 5: return std::string(pick(r, 2) ? 0 : (size_t)1 << 20, 'x');
    case 6: {
      static const char* s[] = {"", "x", "1e3", "-1", "constant", "spd", "apd", "tms", "mlp", "F32"};
      const uint64_t k = pick(r, 11);
      return k < 10 ? json(std::string(s[k])) : json(raw.add("\"\xff\xfe\""));  // invalid UTF-8
    }
    case 7: return pick(r, 2) == 1;
    case 8: return nullptr;
    case 9: return pick(r, 2) ? json::array() : json::object();
    case 10: return json::array({number_value(r, raw), number_value(r, raw), number_value(r, raw)});
    default: {
      const size_t depth = pick(r, 2) ? 99 : 150 + pick(r, 10000);
      return raw.add(std::string(depth, '[') + std::string(depth, ']'));
    }
  }
}

void collect(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  out.push_back(at);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) collect(it.value(), at / it.key(), out);
  else if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) collect(j[i], at / i, out);
}

// One edit somewhere in the tree.
void mutate_tree(json& root, ad::Rng& r, Raw& raw) {
  std::vector<json::json_pointer> nodes;
  collect(root, json::json_pointer(), nodes);
  const json::json_pointer at = nodes[pick(r, nodes.size())];
  json& node = root[at];
  const uint64_t op = pick(r, 10);
  if (op < 5 || at.empty()) {
    if (!at.empty()) node = any_value(r, raw);
    else if (root.is_object()) root["x" + std::to_string(pick(r, 9))] = any_value(r, raw);
  } else if (op == 5 && at.parent_pointer().empty() == false && root[at.parent_pointer()].is_object()) {
    root[at.parent_pointer()].erase(at.back());
  } else if (op == 6 && node.is_object()) {
    const std::string key = pick(r, 3) ? "unknown_" + std::to_string(pick(r, 99)) : std::string((size_t)100000, 'k');
    node[key] = any_value(r, raw);
  } else if (op == 7 && node.is_object() && !node.empty()) {  // a key repeated in one object
    auto it = node.begin();
    std::advance(it, (long)pick(r, node.size()));
    node[raw.add(json(it.key()).dump())] = any_value(r, raw);
  } else if (op == 8) {
    node = pick(r, 2) ? json::array({node}) : json{{"value", node}};
  } else {
    node = number_value(r, raw);
  }
}

// Text-level damage: truncation, a flipped byte, an inserted character.
void damage_text(std::string& s, ad::Rng& r) {
  if (s.empty()) return;
  switch (pick(r, 3)) {
    case 0: s.resize(pick(r, s.size())); break;
    case 1: s[pick(r, s.size())] ^= (char)(1 + pick(r, 255)); break;
    default: s.insert(pick(r, s.size()), 1, "{}[]\",:\\0\x01"[pick(r, 10)]);
  }
}

std::string with_length(uint64_t n) { return std::string(reinterpret_cast<const char*>(&n), 8); }

// Tensor-entry and metadata edits that a generic tree edit rarely hits.
void mutate_header(json& h, ad::Rng& r, Raw& raw) {
  std::vector<std::string> names;
  for (auto it = h.begin(); it != h.end(); ++it) names.push_back(it.key());
  if (names.empty()) return;
  const std::string name = names[pick(r, names.size())];
  json& e = h[name];
  if (name == "__metadata__") {
    if (!e.is_object() || e.empty()) return;
    auto it = e.begin();
    std::advance(it, (long)pick(r, e.size()));
    static const char* v[] = {"1e3", "-1", "99999999999999999999", "", "3", "[1e999]", "{\"a\":1,\"a\":2}", "nan", "{}"};
    if (pick(r, 4)) it.value() = v[pick(r, 9)];
    else e.erase(it.key());
    return;
  }
  if (!e.is_object()) return;
  static const char* dtypes[] = {"F32", "F64", "F16", "BF16", "I8", "U8", "BOOL", "I16", "I32", "I64", "F8_E4M3", "X", ""};
  switch (pick(r, 6)) {
    case 0: e["dtype"] = dtypes[pick(r, 13)]; break;
    case 1: {
      json shape = json::array();
      for (uint64_t k = pick(r, 8); k-- > 0;) shape.push_back(pick(r, 2) ? json(pick(r, 6)) : number_value(r, raw));
      e["shape"] = shape;
      break;
    }
    case 2: e["data_offsets"] = json::array({number_value(r, raw), number_value(r, raw)}); break;
    case 3:
      if (e["data_offsets"].is_array() && e["data_offsets"].size() == 2) e["data_offsets"][pick(r, 2)] = pick(r, 64);
      break;
    case 4: h[name + "_copy"] = e; break;
    default: h.erase(name);
  }
}

}  // namespace

std::string mutate_config(const json& valid, ad::Rng& r) {
  json j = valid;
  Raw raw;
  for (uint64_t k = 1 + pick(r, 3); k-- > 0;) mutate_tree(j, r, raw);
  std::string text = raw.render(j);
  if (pick(r, 8) == 0) damage_text(text, r);
  return text;
}

std::string mutate_safetensors(const std::string& valid, ad::Rng& r) {
  uint64_t hlen = 0;
  std::memcpy(&hlen, valid.data(), 8);
  json header = json::parse(valid.substr(8, hlen));
  std::string data = valid.substr(8 + hlen);
  Raw raw;
  const uint64_t kind = pick(r, 10);
  if (kind < 4) {
    for (uint64_t k = 1 + pick(r, 2); k-- > 0;) mutate_header(header, r, raw);
  } else if (kind < 6) {
    mutate_tree(header, r, raw);
  } else if (kind == 6 && data.size() >= 4) {  // non-finite floats in the data
    const uint32_t bits[] = {0x7fc00000u, 0x7f800000u, 0xff800000u};
    for (uint64_t k = 1 + pick(r, 4); k-- > 0;) std::memcpy(&data[4 * pick(r, data.size() / 4)], &bits[pick(r, 3)], 4);
  }
  std::string text = raw.render(header);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string file = with_length(text.size()) + text + data;
  if (kind == 7) {  // the length field
    const uint64_t lens[] = {0, 1, 7, hlen - 1, hlen + 1, hlen + 8, (uint64_t)1 << 63, file.size(), 100000001};
    file.replace(0, 8, with_length(lens[pick(r, 9)]));
  } else if (kind == 8) {
    file.resize(pick(r, 2) ? pick(r, 16) : pick(r, file.size()));
  } else if (kind == 9) {
    for (uint64_t k = 1 + pick(r, 8); k-- > 0;) file[pick(r, file.size())] ^= (char)(1 + pick(r, 255));
  }
  return file;
}

int64_t case_count(int64_t dflt) {
  const char* s = std::getenv("PD_FUZZ_SCALE");
  const double scale = s ? std::atof(s) : 1.0;
  return std::max<int64_t>(1, (int64_t)((double)dflt * (scale > 0 ? scale : 1.0)));
}

}  // namespace fuzz
