#include "autodiff/safetensors.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "autodiff/fileio.hpp"
#include "autodiff/json_depth.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.cpp assumes a little-endian host (the format is little-endian)"
#endif

namespace ad {

using json = nlohmann::json;

namespace {

// The reference implementation refuses headers above 100 MB; so do we (a corrupt length
// field must not make us allocate gigabytes).
constexpr uint64_t kMaxHeader = 100u << 20;

struct DtypeInfo {
  const char* name;
  size_t bytes;
  DType to;  // what we convert it to
};
const DtypeInfo kDtypes[] = {
    {"F32", 4, DType::f32}, {"F64", 8, DType::f64}, {"F16", 2, DType::f32}, {"BF16", 2, DType::f32},
    {"I8", 1, DType::f32},  {"U8", 1, DType::f32},  {"BOOL", 1, DType::f32}, {"I16", 2, DType::f32},
    {"I32", 4, DType::f64}, {"I64", 8, DType::f64},
};

const DtypeInfo* find_dtype(const std::string& s) {
  for (const DtypeInfo& d : kDtypes)
    if (s == d.name) return &d;
  return nullptr;
}

// IEEE binary16 -> float (normal, subnormal, inf, nan).
float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float mag;
  if (exp == 0) mag = std::ldexp((float)mant, -24);  // subnormal: mant * 2^-24
  else if (exp == 31) mag = mant ? NAN : INFINITY;
  else mag = std::ldexp((float)(mant | 0x400), (int)exp - 25);
  float out = mag;
  if (sign) out = -out;
  return out;
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class S>
S load_le(const char* p) {
  S v;
  std::memcpy(&v, p, sizeof(S));
  return v;
}

struct Entry {
  std::string name;
  const DtypeInfo* dt;
  Shape shape;
  uint64_t begin, end;
};

}  // namespace

// ---- writing -----------------------------------------------------------------------------
std::string encode_safetensors(const std::map<std::string, Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail("save_safetensors: '__metadata__' is reserved and cannot name a tensor");
    if (!t.defined()) fail("save_safetensors: tensor '" + name + "' is undefined");
    const uint64_t nbytes = (uint64_t)t.numel() * dtype_size(t.dtype());
    header[name] = {{"dtype", t.dtype() == DType::f32 ? "F32" : "F64"},
                    {"shape", t.shape().to_vector()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data buffer 8-byte aligned in the file
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t n = h.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += h;
  for (const auto& kv : tensors) out.append(static_cast<const char*>(kv.second.raw()), kv.second.node()->bytes());
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::string bytes;
  try {
    bytes = encode_safetensors(tensors, metadata);
  } catch (const Error& e) {
    fail(std::string(e.what()) + " (writing '" + path + "')");
  }
  write_file_atomic(path, bytes);
}

// ---- reading -------------------------------------------------------------------------------
namespace {

// Errors name the file: "safetensors file '<source>': <what>".
[[noreturn]] void bad_file(const std::string& source, const std::string& what) {
  fail("safetensors file '" + source + "': " + what);
}

// The header: length field, JSON object, no repeated keys. Sets hlen.
json parse_header(const std::string& bytes, const std::string& source, uint64_t& hlen) {
  auto bad = [&](const std::string& what) { bad_file(source, what); };
  if (bytes.size() < 8)
    bad("truncated: " + std::to_string(bytes.size()) + " bytes, need at least 8 for the header length");
  hlen = load_le<uint64_t>(bytes.data());
  const uint64_t avail = bytes.size() - 8;
  if (hlen > kMaxHeader) bad("bad header length " + std::to_string(hlen) + " (limit 100 MB)");
  if (hlen > avail)
    bad("bad header length " + std::to_string(hlen) + ": only " + std::to_string(avail) +
        " bytes follow the length field (file truncated?)");
  if (hlen < 2) bad("bad header length " + std::to_string(hlen) + " (too short for a JSON object)");

  // Parse, refusing repeated keys (JSON would silently keep the last one).
  const json header = parse_json(bytes.data() + 8, bytes.data() + 8 + hlen, "safetensors file '" + source + "': header");
  if (!header.is_object()) bad("header is not a JSON object");

  return header;
}

// One tensor entry of the header, validated against the data buffer's size.
Entry parse_entry(const std::string& name, const json& v, uint64_t buf_size, const std::string& source) {
  auto bad = [&](const std::string& what) { bad_file(source, what); };
    const std::string where = "tensor '" + clip_for_message(name) + "'";
    if (!v.is_object()) bad(where + ": entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad(where + ": missing or non-string 'dtype'");
    if (!v.contains("shape") || !v["shape"].is_array()) bad(where + ": missing or non-array 'shape'");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      bad(where + ": 'data_offsets' must be an array [begin, end]");
    Entry e;
    e.name = name;
    const std::string dts = v["dtype"].get<std::string>();
    e.dt = find_dtype(dts);
    if (!e.dt) bad(where + ": unknown dtype '" + clip_for_message(dts) + "' (supported: F32 F64 F16 BF16 I8 U8 BOOL I16 I32 I64)");
    const json& sh = v["shape"];
    if (sh.size() > (size_t)kMaxDims)
      bad(where + ": " + std::to_string(sh.size()) + " dimensions (at most " + std::to_string(kMaxDims) + ")");
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : sh) {
      if (!d.is_number_unsigned()) bad(where + ": shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > ((uint64_t)1 << 48)) bad(where + ": shape is too large");
      overflow |= __builtin_mul_overflow(numel, dim, &numel);
      e.shape.d[e.shape.nd++] = (int64_t)dim;
    }
    // Checked: [2^31, 2^31] of I32 is 2^64 bytes, which an unchecked multiply wraps to 0.
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, (uint64_t)e.dt->bytes, &nbytes);
    if (overflow) bad(where + ": shape " + e.shape.str() + " of " + dts + " is too large (its byte size overflows 64 bits)");
    for (const json& o : v["data_offsets"])
      if (!o.is_number_unsigned()) bad(where + ": data_offsets must be non-negative integers");
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.begin > e.end) bad(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] are reversed");
    if (e.end > buf_size)
      bad(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
          "] out of range (data buffer is " + std::to_string(buf_size) + " bytes; file truncated?)");
    if (e.end - e.begin != nbytes)
      bad(where + ": shape " + e.shape.str() + " of " + dts + " needs " + std::to_string(nbytes) +
          " bytes but data_offsets span " + std::to_string(e.end - e.begin));
  return e;
}

// The buffer must be covered exactly once by the entries.
void check_coverage(const std::vector<Entry>& entries, uint64_t buf_size, const std::string& source) {
  auto bad = [&](const std::string& what) { bad_file(source, what); };
  // Sorted by offset, each tensor starts where the
  // previous one ended and the last ends at the end of the file.
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->begin < pos)
      bad("tensor '" + clip_for_message(e->name) + "' data_offsets [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
          "] overlap tensor '" + clip_for_message(prev->name) + "' [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) + "]");
    if (e->begin > pos)
      bad("gap in the data buffer: bytes [" + std::to_string(pos) + ", " + std::to_string(e->begin) +
          ") belong to no tensor (before tensor '" + clip_for_message(e->name) + "')");
    pos = e->end;
    prev = e;
  }
  if (pos != buf_size)
    bad("data buffer has " + std::to_string(buf_size - pos) + " trailing bytes that belong to no tensor");

}

// The tensor of one entry, converted to the engine's dtype (float32, or float64 for F64 and
// the integer types that need it).
Tensor decode_entry(const Entry& e, const char* buf, const std::string& source) {
  auto bad = [&](const std::string& what) { bad_file(source, what); };
  Tensor t = empty(e.shape, e.dt->to);
  const char* src = buf + e.begin;
  const int64_t n = e.shape.numel();
  const std::string dts = e.dt->name;
  if (dts == "F32" || dts == "F64") {
    std::memcpy(t.raw(), src, (size_t)(e.end - e.begin));
  } else if (e.dt->to == DType::f32) {
    float* d = t.data<float>();
    if (dts == "F16") for (int64_t i = 0; i < n; ++i) d[i] = half_to_float(load_le<uint16_t>(src + 2 * i));
    else if (dts == "BF16") for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_float(load_le<uint16_t>(src + 2 * i));
    else if (dts == "I8") for (int64_t i = 0; i < n; ++i) d[i] = (float)load_le<int8_t>(src + i);
    else if (dts == "U8") for (int64_t i = 0; i < n; ++i) d[i] = (float)load_le<uint8_t>(src + i);
    else if (dts == "BOOL") for (int64_t i = 0; i < n; ++i) d[i] = load_le<uint8_t>(src + i) ? 1.0f : 0.0f;
    else for (int64_t i = 0; i < n; ++i) d[i] = (float)load_le<int16_t>(src + 2 * i);  // I16
  } else if (dts == "I32") {
    double* d = t.data<double>();
    for (int64_t i = 0; i < n; ++i) d[i] = (double)load_le<int32_t>(src + 4 * i);
  } else {  // I64
    double* d = t.data<double>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = load_le<int64_t>(src + 8 * i);
      if (v > ((int64_t)1 << 53) || v < -((int64_t)1 << 53))
        bad("tensor '" + clip_for_message(e.name) + "': I64 value " + std::to_string(v) + " at flat index " + std::to_string(i) +
            " is not exactly representable as float64");
      d[i] = (double)v;
    }
  }
  return t;
}

}  // namespace

SafeTensors decode_safetensors(const std::string& bytes, const std::string& source) {
  uint64_t hlen = 0;
  const json header = parse_header(bytes, source, hlen);
  SafeTensors out;
  std::vector<Entry> entries;
  const uint64_t buf_size = bytes.size() - 8 - hlen;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad_file(source, "'__metadata__' is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) bad_file(source, "'__metadata__' value of '" + clip_for_message(m.key()) + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, v, buf_size, source));
  }
  check_coverage(entries, buf_size, source);
  const char* buf = bytes.data() + 8 + hlen;
  for (const Entry& e : entries) {
    out.tensors[e.name] = decode_entry(e, buf, source);
    out.file_dtypes[e.name] = e.dt->name;
  }
  return out;
}

SafeTensors load_safetensors(const std::string& path) { return decode_safetensors(read_file(path), path); }

}  // namespace ad
