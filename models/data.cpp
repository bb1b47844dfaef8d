#include "models/data.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

namespace models {

// ---- sparse features ---------------------------------------------------------------------

json SparseFeatureSpec::to_json() const {
  json j{{"feature_prob", feature_prob}, {"value_range", {value_min, value_max}}, {"mode", mode}};
  if (mode == "exactly_k") j["k"] = k;
  return j;
}

SparseFeatureSpec SparseFeatureSpec::from(ConfigSection& s, int64_t n_features) {
  SparseFeatureSpec d;
  d.n_features = n_features;
  d.mode = s.get_string("mode", "at_least_zero");
  if (d.mode != "at_least_zero" && d.mode != "exactly_k")
    s.error("mode", "must be \"at_least_zero\" or \"exactly_k\", got \"" + d.mode + "\"");
  d.feature_prob = s.get_double("feature_prob", d.feature_prob);
  if (!(d.feature_prob >= 0 && d.feature_prob <= 1)) s.error("feature_prob", "must be in [0, 1]");
  std::vector<double> r = s.get_doubles("value_range", {0.0, 1.0});
  if (r.size() != 2 || !(r[0] <= r[1])) s.error("value_range", "must be [min, max] with min <= max");
  d.value_min = r[0];
  d.value_max = r[1];
  d.k = s.get_int("k", 1);
  if (d.mode == "exactly_k" && (d.k < 0 || d.k > n_features)) s.error("k", "must be in [0, n_features]");
  return d;
}

ad::Tensor sample_sparse_features(const SparseFeatureSpec& spec, int64_t batch, ad::Rng& rng, ad::DType dtype) {
  const int64_t n = spec.n_features;
  ad::Tensor x = ad::zeros({batch, n}, dtype);
  ad::dispatch(dtype, [&](auto z) {
    using T = decltype(z);
    T* p = x.data<T>();
    if (spec.mode == "at_least_zero") {
      // Draw the activity first, the value only for active features: one uniform per
      // inactive entry instead of two keeps generation cheap at p = 0.01.
      for (int64_t i = 0; i < batch * n; ++i)
        if (rng.uniform() < spec.feature_prob) p[i] = (T)rng.uniform(spec.value_min, spec.value_max);
    } else {
      std::vector<int64_t> idx((size_t)n);
      for (int64_t b = 0; b < batch; ++b) {
        // Partial Fisher-Yates: the first k entries are a uniform k-subset.
        for (int64_t i = 0; i < n; ++i) idx[(size_t)i] = i;
        for (int64_t i = 0; i < spec.k; ++i) {
          int64_t j = i + (int64_t)rng.below((uint64_t)(n - i));
          std::swap(idx[(size_t)i], idx[(size_t)j]);
          p[b * n + idx[(size_t)i]] = (T)rng.uniform(spec.value_min, spec.value_max);
        }
      }
    }
  });
  return x;
}

ad::Tensor resid_mlp_labels(const ad::Tensor& x) {
  ad::Tensor y = ad::empty(x.shape(), x.dtype());
  ad::dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) py[i] = px[i] + (px[i] > 0 ? px[i] : (T)0);
  });
  return y;
}

// ---- induction -----------------------------------------------------------------------------

InductionBatch sample_induction(int64_t vocab, int64_t half_len, int64_t batch, ad::Rng& rng) {
  if (vocab < 2 || half_len < 2 || batch < 1) ad::fail("sample_induction: need vocab >= 2, half_len >= 2, batch >= 1");
  const int64_t T = 2 * half_len;
  std::vector<int32_t> tok((size_t)(batch * T)), in((size_t)(batch * (T - 1))), tg((size_t)(batch * (T - 1)));
  InductionBatch out;
  out.scored.assign((size_t)(batch * (T - 1)), 0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < half_len; ++t) tok[(size_t)(b * T + t)] = (int32_t)rng.below((uint64_t)vocab);
    for (int64_t t = 0; t < half_len; ++t) tok[(size_t)(b * T + half_len + t)] = tok[(size_t)(b * T + t)];
    for (int64_t t = 0; t + 1 < T; ++t) {
      in[(size_t)(b * (T - 1) + t)] = tok[(size_t)(b * T + t)];
      tg[(size_t)(b * (T - 1) + t)] = tok[(size_t)(b * T + t + 1)];
      // Input at t >= half_len sits inside the repeat: its successor was seen before.
      out.scored[(size_t)(b * (T - 1) + t)] = t >= half_len ? 1 : 0;
    }
  }
  out.tokens = ad::Indices(std::move(tok), {batch, T});
  out.inputs = ad::Indices(std::move(in), {batch, T - 1});
  out.targets = ad::Indices(std::move(tg), {batch * (T - 1)});
  return out;
}

// ---- UTF-8 -----------------------------------------------------------------------------------

static std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = (unsigned char)s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size())
      ad::fail("utf8: invalid UTF-8 byte 0x" + [&] { char b[8]; std::snprintf(b, 8, "%02x", c); return std::string(b); }() +
               " at byte offset " + std::to_string(i));
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; ++k) {
      unsigned char cc = (unsigned char)s[i + k];
      if ((cc >> 6) != 2) ad::fail("utf8: invalid continuation byte at byte offset " + std::to_string(i + k));
      cp = (cp << 6) | (cc & 0x3F);
    }
    cps.push_back(cp);
    i += len;
  }
  return cps;
}

static void utf8_append(std::string& s, uint32_t cp) {
  if (cp < 0x80) s += (char)cp;
  else if (cp < 0x800) { s += (char)(0xC0 | (cp >> 6)); s += (char)(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { s += (char)(0xE0 | (cp >> 12)); s += (char)(0x80 | ((cp >> 6) & 0x3F)); s += (char)(0x80 | (cp & 0x3F)); }
  else { s += (char)(0xF0 | (cp >> 18)); s += (char)(0x80 | ((cp >> 12) & 0x3F)); s += (char)(0x80 | ((cp >> 6) & 0x3F)); s += (char)(0x80 | (cp & 0x3F)); }
}

// ---- tokenizer -------------------------------------------------------------------------------

Tokenizer Tokenizer::byte_level() { return Tokenizer(); }

Tokenizer Tokenizer::char_level(const std::string& corpus) {
  Tokenizer t;
  t.kind_ = "char";
  std::vector<uint32_t> cps = utf8_decode(corpus);
  std::sort(cps.begin(), cps.end());
  cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
  t.chars_ = cps;
  for (size_t i = 0; i < cps.size(); ++i) t.index_[cps[i]] = (int32_t)i;
  return t;
}

json Tokenizer::to_json() const {
  json j{{"kind", kind_}};
  if (kind_ == "char") {
    std::string all;
    for (uint32_t c : chars_) utf8_append(all, c);
    j["chars"] = all;  // the vocabulary in token-id order, as one UTF-8 string
  }
  return j;
}

Tokenizer Tokenizer::from_json(const json& j) {
  ConfigSection s(j, "<tokenizer>", "tokenizer");
  std::string kind = s.get_string("kind");
  if (kind == "byte") {
    s.finish();
    return byte_level();
  }
  if (kind != "char") s.error("kind", "must be \"byte\" or \"char\"");
  Tokenizer t = char_level(s.get_string("chars"));
  s.finish();
  return t;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  if (kind_ == "byte") {
    for (unsigned char c : text) ids.push_back((int32_t)c);
    return ids;
  }
  for (uint32_t cp : utf8_decode(text)) {
    auto it = index_.find(cp);
    if (it == index_.end()) ad::fail("Tokenizer.encode: character U+" + std::to_string(cp) + " is not in the char vocabulary");
    ids.push_back(it->second);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) ad::fail("Tokenizer.decode: id " + std::to_string(id) + " out of range");
    if (kind_ == "byte") s += (char)(unsigned char)id;
    else utf8_append(s, chars_[(size_t)id]);
  }
  return s;
}

int64_t Tokenizer::vocab_size() const { return kind_ == "byte" ? 256 : (int64_t)chars_.size(); }

// ---- story corpus ------------------------------------------------------------------------------

namespace {
struct Person {
  const char* name;
  bool female;
};
const Person kPeople[] = {{"Mia", true},  {"Tom", false}, {"Lily", true}, {"Ben", false}, {"Anna", true},
                          {"Sam", false}, {"Zoe", true},  {"Max", false}, {"Ella", true}, {"Leo", false},
                          {"Nora", true}, {"Jack", false}};
const char* kPlaces[] = {"the market", "the park", "the river", "the forest", "the school", "the beach", "the farm", "the library"};
struct Thing {
  const char* one;
  const char* many;
};
const Thing kThings[] = {{"apple", "apples"}, {"book", "books"},   {"ball", "balls"},     {"flower", "flowers"},
                         {"cookie", "cookies"}, {"stone", "stones"}, {"shell", "shells"}, {"box", "boxes"}};
const char* kNumbers[] = {"one", "two", "three", "four", "five"};
const char* kFeelings[] = {"happy", "sad", "tired", "excited", "surprised"};
const char* kHomes[] = {"a small house", "a big house", "a little cottage", "a tall tower"};
const char* kNear[] = {"near the river", "by the sea", "at the edge of the forest", "in a quiet town"};
}  // namespace

std::string generate_story_corpus(int64_t n_stories, uint64_t seed) {
  ad::Rng rng(seed);
  auto pick = [&](auto& arr) -> decltype(arr[0]) { return arr[rng.below(sizeof(arr) / sizeof(arr[0]))]; };
  std::string out;
  for (int64_t s = 0; s < n_stories; ++s) {
    const Person& hero = pick(kPeople);
    const Person* friend_ = &pick(kPeople);
    while (friend_ == &hero) friend_ = &pick(kPeople);
    const char* he = hero.female ? "she" : "he";
    const char* He = hero.female ? "She" : "He";
    const char* his = hero.female ? "her" : "his";
    const char* fhe = friend_->female ? "She" : "He";
    const char* kind = hero.female ? "girl" : "boy";
    const Thing& thing = pick(kThings);
    const int64_t n = (int64_t)rng.below(5);
    const std::string count = std::string(kNumbers[n]) + " " + (n == 0 ? thing.one : thing.many);
    const char* place = pick(kPlaces);
    std::string st;
    st += std::string("Once upon a time, there was a ") + kind + " named " + hero.name + ". ";
    st += std::string(hero.name) + " lived in " + pick(kHomes) + " " + pick(kNear) + ". ";
    st += std::string("One day, ") + hero.name + " went to " + place + " with " + his + " friend " + friend_->name + ". ";
    switch (rng.below(3)) {
      case 0: st += std::string("At ") + (place + 4) + ", " + he + " found " + count + ". "; break;
      case 1: st += std::string(He) + " saw " + count + " and picked " + (n == 0 ? "it" : "them") + " up. "; break;
      default: st += std::string(friend_->name) + " gave " + hero.name + " " + count + ". "; break;
    }
    st += std::string(hero.name) + " was very " + pick(kFeelings) + ". ";
    st += std::string(fhe) + " said, \"" + hero.name + ", can I have " + (n == 0 ? "the " + std::string(thing.one) : "one " + std::string(thing.one)) + "?\" ";
    if (rng.below(2) == 0) {
      st += std::string(hero.name) + " said yes, and " + he + " gave " + friend_->name + " " + (n == 0 ? "the " + std::string(thing.one) : "one " + std::string(thing.one)) + ". ";
      st += std::string("Then ") + hero.name + " and " + friend_->name + " went home together. ";
    } else {
      st += std::string(hero.name) + " said no, because " + he + " wanted to keep " + (n == 0 ? "it" : "them") + ". ";
      st += std::string(friend_->name) + " went home alone. ";
    }
    st += "The end.\n\n";
    out += st;
  }
  return out;
}

std::string load_corpus(const std::string& spec) {
  constexpr int64_t kMaxStories = 1000000;  // about 200 MB of text
  const std::string pre = "builtin:stories";
  if (spec.compare(0, pre.size(), pre) == 0) {
    int64_t n = 4000;
    if (spec.size() > pre.size()) {
      if (spec[pre.size()] != ':') ad::fail("corpus '" + spec + "': expected builtin:stories or builtin:stories:N");
      const char* b = spec.data() + pre.size() + 1;
      const char* e = spec.data() + spec.size();
      const auto r = std::from_chars(b, e, n);
      if (r.ec != std::errc() || r.ptr != e || n < 1 || n > kMaxStories)
        ad::fail("corpus '" + ad::clip_for_message(spec) + "': N in builtin:stories:N must be a whole number in [1, " +
                 std::to_string(kMaxStories) + "]");
    }
    return generate_story_corpus(n);
  }
  std::ifstream in(spec, std::ios::binary);
  if (!in) ad::fail("corpus '" + ad::clip_for_message(spec) + "': cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.empty()) ad::fail("corpus '" + ad::clip_for_message(spec) + "': file is empty");
  return text;
}

double unigram_entropy(const std::vector<int32_t>& ids, int64_t vocab) {
  std::vector<double> c((size_t)vocab, 0.0);
  for (int32_t i : ids) c[(size_t)i] += 1;
  double h = 0, n = (double)ids.size();
  for (double v : c)
    if (v > 0) h -= (v / n) * std::log(v / n);
  return h;
}

TextDataset make_text_dataset(const std::string& corpus_spec, const std::string& tokenizer, double val_fraction) {
  std::string text = load_corpus(corpus_spec);
  TextDataset d;
  if (tokenizer == "char") d.tok = Tokenizer::char_level(text);
  else if (tokenizer == "byte") d.tok = Tokenizer::byte_level();
  else ad::fail("text dataset: tokenizer must be \"char\" or \"byte\", got \"" + tokenizer + "\"");
  std::vector<int32_t> ids = d.tok.encode(text);
  if (!(val_fraction > 0 && val_fraction < 1)) ad::fail("text dataset: val_fraction must be in (0, 1)");
  size_t n_val = (size_t)((double)ids.size() * val_fraction);
  d.train.assign(ids.begin(), ids.end() - (ptrdiff_t)n_val);
  d.val.assign(ids.end() - (ptrdiff_t)n_val, ids.end());
  return d;
}

TextBatch sample_text(const std::vector<int32_t>& stream, int64_t seq_len, int64_t batch, ad::Rng& rng) {
  if ((int64_t)stream.size() < seq_len + 2)
    ad::fail("sample_text: the token stream (" + std::to_string(stream.size()) + " tokens) is shorter than seq_len + 2 = " +
             std::to_string(seq_len + 2));
  std::vector<int32_t> in((size_t)(batch * seq_len)), tg((size_t)(batch * seq_len));
  for (int64_t b = 0; b < batch; ++b) {
    const size_t start = (size_t)rng.below((uint64_t)((int64_t)stream.size() - seq_len - 1 + 1));
    for (int64_t t = 0; t < seq_len; ++t) {
      in[(size_t)(b * seq_len + t)] = stream[start + (size_t)t];
      tg[(size_t)(b * seq_len + t)] = stream[start + (size_t)t + 1];
    }
  }
  TextBatch tb;
  tb.inputs = ad::Indices(std::move(in), {batch, seq_len});
  tb.targets = ad::Indices(std::move(tg), {batch * seq_len});
  return tb;
}

}  // namespace models
