// Training data for the target models, exposed so the decompositions (SPD/APD/VPD) can
// draw exactly the same distributions:
//   - sparse features (TMS, residual MLP): each feature active with probability p
//     ("at_least_zero": all-zero samples allowed) or exactly k active per sample, active
//     values U[value_min, value_max];
//   - induction sequences: a random first half repeated as the second half;
//   - text: a corpus (any UTF-8 file, or the built-in generated story corpus) tokenised at
//     char or byte level, cut into random windows.
// Every sampler takes the Rng explicitly; training seeds one Rng per step from (seed, step),
// so a resumed run draws the same batches as an uninterrupted one.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "autodiff/random.hpp"
#include "autodiff/tensor.hpp"
#include "models/config.hpp"

namespace models {

// ---- sparse features ---------------------------------------------------------------------
struct SparseFeatureSpec {
  int64_t n_features = 5;
  double feature_prob = 0.05;
  double value_min = 0.0, value_max = 1.0;
  std::string mode = "at_least_zero";  // or "exactly_k"
  int64_t k = 1;                        // exactly_k only
  json to_json() const;
  // Reads feature_prob, value_range, mode, k (n_features comes from the model).
  static SparseFeatureSpec from(ConfigSection& s, int64_t n_features);
};

// x: [batch, n_features]
ad::Tensor sample_sparse_features(const SparseFeatureSpec& spec, int64_t batch, ad::Rng& rng,
                                  ad::DType dtype = ad::DType::f32);
// Residual MLP labels: y = x + ReLU(x) (METHODS 1.2), elementwise, no gradient.
ad::Tensor resid_mlp_labels(const ad::Tensor& x);

// ---- induction sequences -------------------------------------------------------------------
// tokens [batch, 2*half_len]: a uniformly random first half (tokens in [0, vocab)), then the
// same half again. The next-token prediction at positions half_len .. 2*half_len-2 (inputs
// inside the repeat) is fully determined by the first half: that is the induction task.
struct InductionBatch {
  ad::Indices tokens;   // [B, T]
  ad::Indices inputs;   // [B, T-1]: tokens[:, :-1]
  ad::Indices targets;  // [B*(T-1)]: tokens[:, 1:], flattened
  std::vector<uint8_t> scored;  // [B*(T-1)]: 1 where the target lies in the repeat and is
                                // predictable (second token of the repeat onwards)
};
InductionBatch sample_induction(int64_t vocab, int64_t half_len, int64_t batch, ad::Rng& rng);

// ---- text ---------------------------------------------------------------------------------
// Char level: one token per Unicode code point seen in the corpus (vocab sorted by code
// point). Byte level: 256 tokens, one per byte.
class Tokenizer {
 public:
  static Tokenizer byte_level();
  static Tokenizer char_level(const std::string& corpus_utf8);
  static Tokenizer from_json(const json& j);
  json to_json() const;
  std::vector<int32_t> encode(const std::string& text) const;  // unknown chars -> error
  std::string decode(const std::vector<int32_t>& ids) const;
  bool covers(const std::string& text) const;  // encode(text) would succeed
  int64_t vocab_size() const;
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_ = "byte";
  std::vector<uint32_t> chars_;  // char level: token id -> code point
  std::map<uint32_t, int32_t> index_;
};

// The default corpus: a deterministic grammar of short stories with recurring names,
// pronoun agreement and counted objects (no download). Same seed -> same text.
std::string generate_story_corpus(int64_t n_stories, uint64_t seed = 1234);

// The same corpus with per-character ground truth read off the grammar, for probing what a
// decomposition of a model trained on it has found. The text is ASCII, so character i is
// byte i. labels[f][i] is 1 or 0 where feature f is defined at character i, -1 where not:
//   hero_female          every character from the hero's "girl" / "boy" to the story's end:
//                        1 for a girl (the state a model needs to choose "she" over "he")
//   hero_pronoun_female  the characters of he / she / his / her that refer to the hero
//                        (the friend's "She said" is not labelled): 1 for she / her
//   plural               the counted noun after the number word ("three [apples]",
//                        "one [apple]"): 1 when plural
//   quote                every character: 1 between the quotation marks (marks excluded)
//   name                 every character: 1 on a person's name (hero or friend, anywhere)
//   place                every character: 1 on a place noun ("the [market]", "At [market]")
//   feeling              every character: 1 on the feeling word ("was very [happy]")
struct AnnotatedStories {
  std::string text;                         // == generate_story_corpus(n_stories, seed)
  std::vector<std::string> features;        // story_feature_names()
  std::vector<std::vector<int8_t>> labels;  // [feature][character]
  std::vector<size_t> story_start;          // byte offset of each story in text
};
AnnotatedStories generate_annotated_stories(int64_t n_stories, uint64_t seed = 1234);
const std::vector<std::string>& story_feature_names();
// "builtin:stories" (optionally "builtin:stories:N") or a UTF-8 file path.
std::string load_corpus(const std::string& spec);
// Unigram entropy in nats per token of a token stream (the bar a language model must beat).
double unigram_entropy(const std::vector<int32_t>& ids, int64_t vocab);

struct TextDataset {
  Tokenizer tok;
  std::vector<int32_t> train, val;  // token streams; val = the last val_fraction of the text
};
TextDataset make_text_dataset(const std::string& corpus_spec, const std::string& tokenizer, double val_fraction);

// Random windows: inputs [B, T], targets [B*T] (the next tokens).
struct TextBatch {
  ad::Indices inputs, targets;
};
TextBatch sample_text(const std::vector<int32_t>& stream, int64_t seq_len, int64_t batch, ad::Rng& rng);

}  // namespace models
