// pd components and what it is made of: the exact AUROC, the annotated story generator (the
// same text as the corpus, labels where the grammar puts them), top-activating contexts, the
// command on a tiny decomposition of a tiny language model (table, JSON, probe, agreement with
// the run's components.json, bad inputs), and the contexts section of that run's report.html
// (tests/test_report.cpp renders it in headless Chromium).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "decomp/component_stats.hpp"
#include "experiments/components.hpp"
#include "experiments/decompose_pipeline.hpp"
#include "experiments/story_probe.hpp"
#include "models/config.hpp"
#include "models/data.hpp"
#include "tests/cli_test_util.hpp"

using nlohmann::json;

namespace {

// Brute force: the fraction of (positive, negative) pairs the positive wins, ties one half.
double auroc_pairs(const std::vector<float>& s, const std::vector<int8_t>& y) {
  double won = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i)
    for (size_t j = 0; j < s.size(); ++j)
      if (y[i] == 1 && y[j] == 0) won += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0, pairs += 1;
  return won / pairs;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The labels of `feature` over text[at, at + n).
std::vector<int> labels_at(const models::AnnotatedStories& a, const std::string& feature, size_t at, size_t n) {
  size_t f = 0;
  while (a.features[f] != feature) ++f;
  return std::vector<int>(a.labels[f].begin() + (ptrdiff_t)at, a.labels[f].begin() + (ptrdiff_t)(at + n));
}

}  // namespace

TEST_CASE("auroc: hand data, ties averaged, skipped positions, all-equal 0.5, undefined without both classes") {
  // 0.75: of the four (positive, negative) pairs the positives win three
  CHECK(decomp::auroc({0.1f, 0.4f, 0.35f, 0.8f}, {0, 0, 1, 1}) == doctest::Approx(0.75));
  CHECK(decomp::auroc({1, 2, 3, 4}, {0, 0, 1, 1}) == 1.0);
  CHECK(decomp::auroc({1, 2, 3, 4}, {1, 1, 0, 0}) == 0.0);
  // positives 0.5, 0.9 against negatives 0.2, 0.5: 1 + 1/2 + 1 + 1 of 4 pairs. The skipped 0.5
  // (label -1) would give 5/6 if it were counted as a negative.
  CHECK(decomp::auroc({0.2f, 0.5f, 0.5f, 0.9f, 0.5f}, {0, 1, 0, 1, -1}) == doctest::Approx(0.875));
  CHECK(decomp::auroc({0.3f, 0.3f, 0.3f, 0.3f, 0.3f}, {1, 0, 1, 0, 0}) == 0.5);
  CHECK(std::isnan(decomp::auroc({1, 2, 3}, {1, 1, -1})));
  CHECK(std::isnan(decomp::auroc({1, 2, 3}, {0, 0, 0})));
  CHECK_THROWS_WITH_AS(decomp::auroc({1, 2}, {1}), doctest::Contains("2 scores but 1 labels"), ad::Error);
  // Against counting pairs, on scores with many ties and some skipped positions.
  ad::Rng rng(5);
  std::vector<float> s(300);
  std::vector<int8_t> y(300);
  for (size_t i = 0; i < s.size(); ++i) s[i] = (float)rng.below(7), y[i] = (int8_t)((int)rng.below(3) - 1);
  CHECK(decomp::auroc(s, y) == doctest::Approx(auroc_pairs(s, y)).epsilon(1e-12));
}

TEST_CASE("annotated stories: the corpus text bit for bit, labels where the grammar puts them") {
  // The corpus as generate_story_corpus wrote it before the annotated variant existed.
  const std::string corpus = models::generate_story_corpus(4000);
  CHECK(corpus.size() == 1280824);
  CHECK(fnv1a(corpus) == 0x150b90d7f527a191ull);
  for (uint64_t seed : {1234ull, 7ull}) {
    const models::AnnotatedStories a = models::generate_annotated_stories(60, seed);
    CHECK(a.text == models::generate_story_corpus(60, seed));
    REQUIRE(a.labels.size() == models::story_feature_names().size());
    for (const auto& l : a.labels) CHECK(l.size() == a.text.size());
    CHECK(a.story_start.size() == 60);
  }
  const models::AnnotatedStories a = models::generate_annotated_stories(2);
  // Story 1: "...a boy named Jack. ... He saw three books ... She said, "Jack, can I have one book?"
  // Jack said yes, and he gave Nora one book." Story 2: a girl, Anna: "... and she gave Leo ...".
  const std::string& t = a.text;
  REQUIRE(t.rfind("Once upon a time, there was a boy named Jack.", 0) == 0);
  CHECK(labels_at(a, "hero_female", 0, 4) == std::vector<int>{-1, -1, -1, -1});
  CHECK(labels_at(a, "hero_female", t.find("boy"), 3) == std::vector<int>{0, 0, 0});
  CHECK(labels_at(a, "name", t.find("Jack"), 5) == std::vector<int>{1, 1, 1, 1, 0});
  const size_t saw = t.find("He saw three books");
  REQUIRE(saw != std::string::npos);
  CHECK(labels_at(a, "hero_pronoun_female", saw, 3) == std::vector<int>{0, 0, -1});
  CHECK(labels_at(a, "plural", saw + 7, 12) == std::vector<int>{-1, -1, -1, -1, -1, -1, 1, 1, 1, 1, 1, -1});
  CHECK(labels_at(a, "place", t.find("the market"), 10) == std::vector<int>{0, 0, 0, 0, 1, 1, 1, 1, 1, 1});
  CHECK(labels_at(a, "feeling", t.find("very sad"), 8) == std::vector<int>{0, 0, 0, 0, 0, 1, 1, 1});
  const size_t q = t.find("She said, \"Jack");
  CHECK(labels_at(a, "hero_pronoun_female", q, 3) == std::vector<int>{-1, -1, -1});  // the friend's
  CHECK(labels_at(a, "quote", q + 10, 3) == std::vector<int>{0, 1, 1});  // the opening mark, then "Ja"
  const size_t end_q = t.find("book?\"", q);
  CHECK(labels_at(a, "quote", end_q + 4, 3) == std::vector<int>{1, 0, 0});
  const size_t she = t.find("and she gave Leo");
  REQUIRE(she > a.story_start[1]);
  CHECK(labels_at(a, "hero_pronoun_female", she + 4, 4) == std::vector<int>{1, 1, 1, -1});
  CHECK(labels_at(a, "hero_female", she, 1) == std::vector<int>{1});
  CHECK(labels_at(a, "plural", t.find("three boxes") + 6, 5) == std::vector<int>{1, 1, 1, 1, 1});
  CHECK(labels_at(a, "hero_pronoun_female", t.find("he gave Nora"), 2) == std::vector<int>{0, 0});
}

TEST_CASE("top contexts: each sequence's best position (ties by z, then earlier), text around the token") {
  // Three sequences of four positions. Sequence 0 saturates at 1 twice: z picks position 2
  // (without z the earlier, 1); sequence 1 has no CI > 0; sequence 2 ties in CI and z: earlier.
  const std::vector<float> ci = {0.0f, 1.0f, 1.0f, 0.5f, -0.1f, 0.0f, 0.0f, 0.0f, 0.3f, 0.7f, 0.7f, 0.2f};
  const std::vector<float> z = {-1.0f, 2.0f, 3.0f, 0.1f, -5.0f, -2.0f, -3.0f, -1.0f, -0.5f, 0.9f, 0.9f, -1.0f};
  CHECK(decomp::best_per_sequence(ci.data(), z.data(), 3, 4) == std::vector<int64_t>{2, -1, 1});
  CHECK(decomp::best_per_sequence(ci.data(), nullptr, 3, 4) == std::vector<int64_t>{1, -1, 1});
  const models::Tokenizer tok = models::Tokenizer::char_level("ab\ncdef");
  CHECK(tok.covers("fed\nba"));
  CHECK(!tok.covers("abz"));
  CHECK(models::Tokenizer::byte_level().covers("\xff\x01"));
  const std::vector<int32_t> ids = tok.encode("ab\ncdef");
  decomp::Context c = decomp::context_at(&tok, ids.data(), 7, 3, 2, 2);
  CHECK(c.before == "b\n");
  CHECK(c.token == "c");
  CHECK(c.after == "de");
  CHECK(decomp::show_context(c) == "b\\n[c]de");
  c = decomp::context_at(&tok, ids.data(), 7, 0, 24, 4);  // cut at the sequence's ends
  CHECK(decomp::show_context(c) == "[a]b\\ncd");
  const std::vector<int32_t> raw = {3, 14, 15, 9, 2};
  c = decomp::context_at(nullptr, raw.data(), 5, 2, 2, 1);  // no tokenizer: ids as numbers
  CHECK(decomp::show_context(c) == "3 14 [15] 9");
}

TEST_CASE("pd components on a tiny LM decomposition: table, JSON like components.json, probe, bad inputs") {
  const ScopedTmpDir tmp;
  const std::string& dir = tmp.path;
  const std::string run = tiny_lm_run(dir, "builtin:stories:40", "stories");
  const std::string out = capture_output(1, [&] {
    CHECK(run_pd({"components", run, "--top", "3", "--json", dir + "/c.json", "--probe", "--probe-sequences", "8"}) == 0);
  });
  CHECK(out.find("layer blocks.0.attn.q_proj: ") != std::string::npos);
  CHECK(out.find("layer blocks.0.mlp.c_fc: ") != std::string::npos);
  CHECK(out.find("top contexts (CI)") != std::string::npos);
  CHECK(out.find("]") != std::string::npos);
  json c = json::parse(ad::read_file(dir + "/c.json"));
  for (const char* k : {"method", "ci_threshold", "ablation_batch", "contexts", "layers", "probe"}) CHECK(c.contains(k));
  REQUIRE(c["layers"].size() == 2);
  for (const json& L : c["layers"]) {
    for (const char* k : {"name", "norm", "ci_freq", "ci_mean", "ablation_effect", "top_contexts"}) CHECK(L.contains(k));
    CHECK(L["top_contexts"].size() == 12);
  }
  // One row per feature, in the generator's order, each with a best component or "-".
  const json& rows = c["probe"]["features"];
  REQUIRE(rows.size() == models::story_feature_names().size());
  for (size_t f = 0; f < rows.size(); ++f) {
    CHECK(rows[f]["feature"] == models::story_feature_names()[f]);
    CHECK(out.find("\n" + models::story_feature_names()[f] + " ") != std::string::npos);
  }
  CHECK(rows[4]["auroc"].is_number());  // "name": defined everywhere, both classes present
  // The same seeds as the run: everything but the probe equals the run's components.json.
  c.erase("probe");
  CHECK(c == json::parse(ad::read_file(run + "/components.json")));

  // The contexts are where the CI is: re-derive the top position of the most frequent component.
  std::unique_ptr<pd::Run> r = pd::open_run_folder(run, true);
  const json& ctx = c["contexts"];
  ad::Rng rng(ctx["seed"].get<uint64_t>());
  const decomp::Batch b = r->spd->target.sample(ctx["sequences"].get<int64_t>(), rng);
  const decomp::SequenceCI ci = decomp::sequence_ci(*r->spd, b.ids.v, b.ids.shape[0], b.ids.shape[1], rng);
  int64_t comp = 0;
  while (c["layers"][0]["top_contexts"][(size_t)comp].empty()) ++comp;
  const json& first = c["layers"][0]["top_contexts"][(size_t)comp][0];
  float largest = 0;
  for (int64_t p = 0; p < ci.positions(); ++p) largest = std::max(largest, ci.component(0, comp)[p]);
  CHECK(first["ci"].get<double>() == doctest::Approx(largest));
  const int64_t at = first["seq"].get<int64_t>() * ci.seq_len + first["pos"].get<int64_t>();
  CHECK(ci.component(0, comp)[at] == largest);
  CHECK(first["token"] == r->spd->target.tokenizer->decode({b.ids.v[(size_t)at]}));

  // Bad inputs: each a clear error and exit code 1.
  auto err_of = [&](std::vector<std::string> args) {
    return capture_output(2, [&] { CHECK(run_pd(args) == 1); });
  };
  CHECK(err_of({"components", dir + "/missing"}).find(dir + "/missing: no such run folder") != std::string::npos);
  CHECK(err_of({"components", dir}).find("no decomposition.safetensors or checkpoint.safetensors") != std::string::npos);
  CHECK(err_of({"components", run, "--layer", "blocks.0.mlp.nope"})
            .find("--layer: no decomposed layer 'blocks.0.mlp.nope' (the run decomposes blocks.0.attn.q_proj, "
                  "blocks.0.mlp.c_fc)") != std::string::npos);
  ad::write_file_atomic(dir + "/corpus.txt", models::generate_story_corpus(40) + "#\n");
  const std::string file_run = tiny_lm_run(dir, dir + "/corpus.txt", "file");
  CHECK(err_of({"components", file_run, "--probe"})
            .find("--probe needs a language model trained on the built-in story corpus (builtin:stories); this run's "
                  "corpus is '" + dir + "/corpus.txt'") != std::string::npos);
  // A target trained on another text (its vocabulary has '#') under the stories run config.
  CHECK(err_of({"decompose", dir + "/stories_spd.json", "--target-checkpoint", file_run + "/target/model.safetensors",
                "--out", dir + "/mixed", "--quiet"})
            .find("the tiny_lm target was trained with another tokenizer than the char tokenizer of corpus "
                  "'builtin:stories:40'") != std::string::npos);
  write_tiny_tms_configs(dir);
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/tms", "--quiet"}) == 0);
  CHECK(err_of({"components", dir + "/tms", "--probe"}).find("this run's target trains on 'sparse_features' data") !=
        std::string::npos);
  // Toys: the same table with the served features instead of contexts.
  const std::string toy = capture_output(1, [&] { CHECK(run_pd({"components", dir + "/tms", "--sort", "ablation"}) == 0); });
  CHECK(toy.find("serves features") != std::string::npos);
  CHECK(toy.find("by ablation effect") != std::string::npos);
  CHECK(toy.find("top contexts") == std::string::npos);
}

TEST_CASE("report.html of a language-model run: a top-activating contexts table per layer") {
  const ScopedTmpDir tmp;
  const std::string run = tiny_lm_run(tmp.path, "builtin:stories:40", "stories");
  const std::string page = ad::read_file(run + "/report.html");
  for (const char* name : {"blocks.0.attn.q_proj", "blocks.0.mlp.c_fc"})
    CHECK(page.find(std::string("<h4>Top-activating contexts: ") + name + "</h4>") != std::string::npos);
  const size_t at = page.find("id=\"contexts-1\"");
  REQUIRE(at != std::string::npos);
  const std::string table = page.substr(at, page.find("</table>", at) - at);
  CHECK(table.find("<code class=\"ctx\">") != std::string::npos);
  CHECK(table.find("<mark>") != std::string::npos);
  // In a browser: tests/test_report.cpp renders this page in headless Chromium.
}
