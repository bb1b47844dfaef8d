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

bool Tokenizer::covers(const std::string& text) const {
  if (kind_ == "byte") return true;
  for (uint32_t cp : utf8_decode(text))
    if (!index_.count(cp)) return false;
  return true;
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

constexpr int kStoryFeatures = 7;  // story_feature_names()

// Appends text and, when annotating, one label per appended character and feature: the
// feature's background value (what it is outside any marked span) or, inside span(), the
// span's value for that one feature.
class StoryWriter {
 public:
  explicit StoryWriter(AnnotatedStories* a) : a_(a) {
    if (a_) a_->labels.assign(kStoryFeatures, {});
  }
  std::string text;
  int8_t bg[kStoryFeatures] = {-1, -1, -1, 0, 0, 0, 0};  // undefined / 0: see story_feature_names

  void put(const std::string& s) { span(s, -1, 0); }
  void span(const std::string& s, int feature, int8_t value) {
    text += s;
    if (!a_) return;
    for (int f = 0; f < kStoryFeatures; ++f) a_->labels[(size_t)f].resize(text.size(), f == feature ? value : bg[f]);
  }

 private:
  AnnotatedStories* a_;
};

// The one story grammar; `a` (may be null) receives the labels. Every draw from rng happens in
// the order the original single-expression generator made them (pinned by a hash in the tests).
std::string write_stories(int64_t n_stories, uint64_t seed, AnnotatedStories* a) {
  ad::Rng rng(seed);
  auto pick = [&](auto& arr) -> decltype(arr[0]) { return arr[rng.below(sizeof(arr) / sizeof(arr[0]))]; };
  StoryWriter w(a);
  enum { kHero = 0, kPronoun, kPlural, kQuote, kName, kPlace, kFeeling };
  for (int64_t s = 0; s < n_stories; ++s) {
    if (a) a->story_start.push_back(w.text.size());
    const Person& hero = pick(kPeople);
    const Person* friend_ = &pick(kPeople);
    while (friend_ == &hero) friend_ = &pick(kPeople);
    const int8_t girl = hero.female ? 1 : 0;
    const char* he = hero.female ? "she" : "he";
    const char* He = hero.female ? "She" : "He";
    const char* his = hero.female ? "her" : "his";
    const char* fhe = friend_->female ? "She" : "He";
    const Thing& thing = pick(kThings);
    const int64_t n = (int64_t)rng.below(5);
    const char* place = pick(kPlaces);
    const std::string one_of = n == 0 ? "the " + std::string(thing.one) : "one " + std::string(thing.one);
    auto name = [&](const char* who) { w.span(who, kName, 1); };
    auto hero_pronoun = [&](const char* p) { w.span(p, kPronoun, girl); };
    auto counted = [&] {  // "three apples": the noun carries the plural label
      w.put(std::string(kNumbers[n]) + " ");
      w.span(n == 0 ? thing.one : thing.many, kPlural, n == 0 ? 0 : 1);
    };
    w.bg[kHero] = -1;
    w.put("Once upon a time, there was a ");
    w.bg[kHero] = girl;  // from the word "girl" / "boy" on
    w.put(hero.female ? "girl" : "boy");
    w.put(" named "), name(hero.name), w.put(". ");
    name(hero.name);
    // GCC evaluated the original `... + pick(kHomes) + " " + pick(kNear)` right to left.
    const char* near = pick(kNear);
    const char* home = pick(kHomes);
    w.put(std::string(" lived in ") + home + " " + near + ". ");
    w.put("One day, "), name(hero.name), w.put(" went to the "), w.span(place + 4, kPlace, 1), w.put(" with ");
    hero_pronoun(his), w.put(" friend "), name(friend_->name), w.put(". ");
    switch (rng.below(3)) {
      case 0:
        w.put("At "), w.span(place + 4, kPlace, 1), w.put(", "), hero_pronoun(he), w.put(" found "), counted();
        w.put(". ");
        break;
      case 1:
        hero_pronoun(He), w.put(" saw "), counted();
        w.put(std::string(" and picked ") + (n == 0 ? "it" : "them") + " up. ");
        break;
      default:
        name(friend_->name), w.put(" gave "), name(hero.name), w.put(" "), counted();
        w.put(". ");
        break;
    }
    name(hero.name), w.put(" was very "), w.span(pick(kFeelings), kFeeling, 1), w.put(". ");
    w.put(std::string(fhe) + " said, \"");
    w.bg[kQuote] = 1;
    name(hero.name), w.put(", can I have " + one_of + "?");
    w.bg[kQuote] = 0;
    w.put("\" ");
    if (rng.below(2) == 0) {
      name(hero.name), w.put(" said yes, and "), hero_pronoun(he), w.put(" gave "), name(friend_->name);
      w.put(" " + one_of + ". Then "), name(hero.name), w.put(" and "), name(friend_->name), w.put(" went home together. ");
    } else {
      name(hero.name), w.put(" said no, because "), hero_pronoun(he);
      w.put(std::string(" wanted to keep ") + (n == 0 ? "it" : "them") + ". "), name(friend_->name), w.put(" went home alone. ");
    }
    w.put("The end.\n\n");
  }
  if (a) a->text = w.text;
  return std::move(w.text);
}

}  // namespace

std::string generate_story_corpus(int64_t n_stories, uint64_t seed) { return write_stories(n_stories, seed, nullptr); }

const std::vector<std::string>& story_feature_names() {
  static const std::vector<std::string> names = {"hero_female", "hero_pronoun_female", "plural", "quote",
                                                 "name",        "place",               "feeling"};
  static_assert(kStoryFeatures == 7, "story_feature_names lists every feature write_stories labels");
  return names;
}

AnnotatedStories generate_annotated_stories(int64_t n_stories, uint64_t seed) {
  AnnotatedStories a;
  a.features = story_feature_names();
  write_stories(n_stories, seed, &a);
  return a;
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
