#include "experiments/story_probe.hpp"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "models/data.hpp"

namespace pd {

using nlohmann::json;

namespace {

// The probe's text: whole stories that the model's tokenizer can encode (a char-level
// vocabulary built from a small corpus may lack a letter some other story uses), one after
// another until `need` characters, with their labels.
struct ProbeText {
  std::string text;
  std::vector<std::vector<int8_t>> labels;  // [feature][character]
  int64_t stories = 0, skipped = 0;
};

ProbeText probe_text(const models::Tokenizer& tok, size_t need, uint64_t seed) {
  const size_t min_story = 288;  // the grammar's shortest story, in characters
  for (int64_t n = (int64_t)(need / min_story) + 2;; n *= 2) {
    // Stories are generated one after another from one generator, so the first k of n
    // stories are the same for every n: growing n only appends.
    const models::AnnotatedStories a = models::generate_annotated_stories(n, seed);
    ProbeText p;
    p.labels.assign(a.labels.size(), {});
    for (size_t k = 0; k < a.story_start.size() && p.text.size() < need; ++k) {
      const size_t b = a.story_start[k], e = k + 1 < a.story_start.size() ? a.story_start[k + 1] : a.text.size();
      const std::string story = a.text.substr(b, e - b);
      if (!tok.covers(story)) {
        ++p.skipped;
        continue;
      }
      ++p.stories;
      p.text += story;
      for (size_t f = 0; f < a.labels.size(); ++f)
        p.labels[f].insert(p.labels[f].end(), a.labels[f].begin() + (ptrdiff_t)b, a.labels[f].begin() + (ptrdiff_t)e);
    }
    if (p.text.size() >= need) {
      p.text.resize(need);
      for (auto& l : p.labels) l.resize(need);
      return p;
    }
    if ((p.stories == 0 && n >= 64) || n >= (int64_t)1 << 20)
      ad::fail("story probe: " + std::to_string(p.stories) + " of " + std::to_string(n) +
               " generated stories can be encoded with the model's tokenizer (its vocabulary lacks characters "
               "the others use); " + std::to_string(need) + " characters are needed");
  }
}

// Labels permuted among the positions where they are defined (undefined positions stay).
std::vector<int8_t> shuffled(const std::vector<int8_t>& label, ad::Rng& rng) {
  std::vector<size_t> at;
  for (size_t i = 0; i < label.size(); ++i)
    if (label[i] >= 0) at.push_back(i);
  std::vector<int8_t> out = label;
  const std::vector<int64_t> perm = rng.permutation((int64_t)at.size());
  for (size_t k = 0; k < at.size(); ++k) out[at[k]] = label[at[(size_t)perm[k]]];
  return out;
}

}  // namespace

std::vector<BestComponent> best_components(const decomp::SequenceCI& ci, const std::vector<std::vector<int8_t>>& labels) {
  for (const auto& l : labels)
    if ((int64_t)l.size() != ci.positions())
      ad::fail("best_components: a label vector has " + std::to_string(l.size()) + " entries for " +
               std::to_string(ci.positions()) + " positions");
  std::vector<BestComponent> best(labels.size());
  for (size_t l = 0; l < ci.ci.size(); ++l)
    for (int64_t c = 0; c < ci.C[l]; ++c) {
      const float* s = ci.component(l, c);
      const std::vector<int64_t> order = decomp::ascending_order(s, ci.positions());  // one sort for every label
      for (size_t f = 0; f < labels.size(); ++f) {
        const double a = decomp::auroc_sorted(s, order, labels[f]);
        if (std::isfinite(a) && (!std::isfinite(best[f].auroc) || a > best[f].auroc)) best[f] = {(int64_t)l, c, a};
      }
    }
  return best;
}

void require_story_corpus(const Run& r, const std::string& run_name) {
  const models::DataConfig& d = r.lt.run.data;
  const std::string pre = "builtin:stories";
  if (d.type != "text")
    ad::fail(run_name + ": --probe needs a language model trained on the built-in story corpus (" + pre +
             "); this run's target trains on '" + d.type + "' data");
  if (d.corpus.compare(0, pre.size(), pre) != 0)
    ad::fail(run_name + ": --probe needs a language model trained on the built-in story corpus (" + pre +
             "); this run's corpus is '" + d.corpus + "', whose text has no ground-truth labels");
}

ProbeResult story_probe(const Run& r, const ProbeOptions& opt, const std::string& run_name) {
  require_story_corpus(r, run_name);
  const models::DataConfig& d = r.lt.run.data;
  if (opt.sequences < 1) ad::fail("story probe: sequences must be >= 1");
  const models::Tokenizer& tok = *r.lt.target.tokenizer;  // set for every text target
  const int64_t S = d.seq_len, need = opt.sequences * S;
  ProbeText pt = probe_text(tok, (size_t)need, opt.seed);
  const std::vector<int32_t> ids = tok.encode(pt.text);
  if ((int64_t)ids.size() != need) ad::fail("story probe: the story text did not encode to one token per character");

  ProbeResult p;
  p.sequences = opt.sequences;
  p.seq_len = S;
  p.seed = opt.seed;
  p.stories = pt.stories;
  p.skipped_stories = pt.skipped;
  ad::Rng rng(opt.seed);
  const decomp::SequenceCI ci = decomp::sequence_ci(*r.spd, ids, opt.sequences, S, rng);
  std::vector<std::vector<int8_t>> labels = pt.labels;  // true labels, then shuffled copies
  const size_t F = pt.labels.size();
  ad::Rng shuffle_rng(opt.seed + 1);
  for (size_t f = 0; f < F; ++f) labels.push_back(shuffled(pt.labels[f], shuffle_rng));
  const std::vector<BestComponent> best = best_components(ci, labels);
  // An untrained decomposition of the same config: what components that learned nothing give.
  ad::Rng init_rng(r.sc.seed + 1);
  const std::unique_ptr<decomp::Decomposition> untrained = decomp::make_decomposition(r.lt.target, r.sc, init_rng);
  const decomp::SequenceCI ci0 = decomp::sequence_ci(*untrained, ids, opt.sequences, S, rng);
  const std::vector<BestComponent> best0 = best_components(ci0, pt.labels);
  for (size_t f = 0; f < F; ++f) {
    ProbeRow row;
    row.feature = models::story_feature_names()[f];
    for (int8_t y : pt.labels[f]) row.defined += y >= 0, row.positive += y > 0;
    if (best[f].layer >= 0) {
      row.layer = r.spd->cm.layers[(size_t)best[f].layer].name;
      row.component = best[f].component;
      row.auroc = best[f].auroc;
    }
    row.shuffled_best = best[F + f].auroc;
    row.random_init_best = best0[f].auroc;
    p.rows.push_back(row);
  }
  return p;
}

json probe_json(const ProbeResult& p) {
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(); };
  json rows = json::array();
  for (const ProbeRow& r : p.rows)
    rows.push_back({{"feature", r.feature},
                    {"positions", r.defined},
                    {"positive", r.positive},
                    {"layer", r.layer.empty() ? json() : json(r.layer)},
                    {"component", r.component >= 0 ? json(r.component) : json()},
                    {"auroc", num(r.auroc)},
                    {"shuffled_labels_best_auroc", num(r.shuffled_best)},
                    {"untrained_best_auroc", num(r.random_init_best)}});
  return {{"sequences", p.sequences}, {"seq_len", p.seq_len},  {"stories", p.stories},
          {"skipped_stories", p.skipped_stories}, {"seed", p.seed}, {"features", rows}};
}

std::string probe_table(const ProbeResult& p) {
  std::ostringstream o;
  o << "probe: " << p.sequences << " sequences of " << p.seq_len << " characters cut from " << p.stories
    << " generated stories (seed " << p.seed << ")";
  if (p.skipped_stories > 0)
    o << "; " << p.skipped_stories << " stories skipped (characters outside the model's vocabulary)";
  o << "\nbest single component per feature by AUROC of its CI against the label, over the positions where the "
       "feature is defined;\nchance: the best AUROC with shuffled labels, and of an untrained decomposition\n";
  o << std::left << std::setw(21) << "feature" << std::right << std::setw(10) << "positions" << std::setw(9)
    << "positive" << "  " << std::left << std::setw(24) << "best layer" << std::right << std::setw(6) << "comp"
    << std::setw(8) << "AUROC" << std::setw(10) << "shuffled" << std::setw(11) << "untrained" << "\n";
  auto f3 = [](double v, int w) {
    std::ostringstream s;
    s << std::setw(w);
    if (std::isfinite(v)) s << std::fixed << std::setprecision(3) << v;
    else s << "-";
    return s.str();
  };
  for (const ProbeRow& r : p.rows) {
    o << std::left << std::setw(21) << r.feature << std::right << std::setw(10) << r.defined << std::setw(9)
      << r.positive << "  " << std::left << std::setw(24) << (r.layer.empty() ? "-" : r.layer) << std::right
      << std::setw(6) << (r.component >= 0 ? std::to_string(r.component) : "-") << f3(r.auroc, 8)
      << f3(r.shuffled_best, 10) << f3(r.random_init_best, 11) << "\n";
  }
  return o.str();
}

}  // namespace pd
