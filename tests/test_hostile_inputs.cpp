// Hostile inputs found by a fuzzing probe: each used to crash or hang; each must now be an
// ad::Error naming the file, tensor or shape. Cases that crashed or hung run in a forked child
// (testutil::run_in_child), so on a regression the test fails instead of taking the binary down.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "autodiff/safetensors.hpp"
#include "autodiff/tensor.hpp"
#include "decomp/metrics.hpp"
#include "models/config.hpp"
#include "models/model.hpp"
#include "models/train.hpp"
#include "tests/child_process.hpp"

namespace {

// f's ad::Error message, "(no error)" if it returned, or how the child died (crash, hang).
std::string error_in_child(const std::function<void()>& f, unsigned seconds = 5) {
  const testutil::ChildResult r = testutil::run_in_child(f, seconds);
  return r.kind == testutil::ChildResult::returned ? "(no error)" : r.message;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string temp_path(const std::string& name) {
  return "/tmp/pd_hostile_" + std::to_string(getpid()) + "_" + name;
}

}  // namespace

// F1: [2^31, 2^31] of I32 is 2^64 bytes; the unchecked multiply wrapped to 0, matched the
// empty data_offsets [0, 0], and the loader then read 2^62 elements.
TEST_CASE("hostile safetensors: a shape whose byte size overflows is refused, not read") {
  const std::string path = temp_path("overflow.safetensors");
  auto file_with = [](const std::string& header) {
    const uint64_t n = header.size();
    return std::string(reinterpret_cast<const char*>(&n), 8) + header;
  };
  const std::string cases[] = {
      R"({"a":{"dtype":"I32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})",
      R"({"a":{"dtype":"I64","shape":[1073741824,1073741824,16],"data_offsets":[0,0]}})",
      R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}})",
  };
  for (const std::string& header : cases) {
    ad::write_file_atomic(path, file_with(header));
    const std::string err = error_in_child([&] { ad::load_safetensors(path); });
    CHECK_MESSAGE(has(err, path), err);
    CHECK_MESSAGE(has(err, "tensor 'a'"), err);
    CHECK_MESSAGE(has(err, "its byte size overflows 64 bits"), err);
  }
  std::remove(path.c_str());
}

// F3: n_features / C / batch_size of 2^62 overflowed Shape::numel (SIGSEGV), 2^63-1 made
// size_class loop forever.
TEST_CASE("hostile sizes: numel overflow and absurd allocations are ad::Errors naming the shape") {
  const int64_t big = (int64_t)1 << 62, huge = INT64_MAX;
  std::string err = error_in_child([&] { ad::Shape{(int64_t)1 << 31, (int64_t)1 << 31, (int64_t)1 << 31}.numel(); });
  CHECK_MESSAGE(has(err, "[2147483648, 2147483648, 2147483648]"), err);
  err = error_in_child([&] { ad::Shape{4, -1}.numel(); });
  CHECK_MESSAGE(has(err, "[4, -1]"), err);
  err = error_in_child([&] { ad::zeros(ad::Shape{big}, ad::DType::f32); });
  CHECK_MESSAGE(has(err, "[4611686018427387904]"), err);
  err = error_in_child([&] { ad::zeros(ad::Shape{huge}, ad::DType::f32); });
  CHECK_MESSAGE(has(err, "[9223372036854775807]"), err);
  err = error_in_child([&] { ad::zeros(ad::Shape{big, 3}, ad::DType::f64); });  // numel itself overflows
  CHECK_MESSAGE(has(err, "[4611686018427387904, 3]"), err);
  err = error_in_child([&] { ad::zeros(ad::Shape{(int64_t)1 << 39}, ad::DType::f64); });  // 4 TiB: over the limit
  CHECK_MESSAGE(has(err, "[549755813888]"), err);
  err = error_in_child([&] { ad::pool_alloc(SIZE_MAX); });
  CHECK_MESSAGE(has(err, "pool_alloc"), err);
  // Ordinary sizes still work.
  CHECK(ad::zeros(ad::Shape{3, 0, 5}, ad::DType::f32).numel() == 0);
  CHECK(ad::zeros(ad::Shape{1000, 7}, ad::DType::f64).numel() == 7000);
}

// F4: an inf (or NaN) score made hungarian_max's potentials inf/NaN and its loop never ended
// (evaluating a decomposition holding an inf weight hung).
TEST_CASE("hostile metrics: non-finite scores are refused by hungarian_max and identity_ci_error") {
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {inf, -inf, std::nan("")}) {
    decomp::Mat s(3, 3, 0.5);
    s(1, 2) = bad;  // one entry: the old code returned some assignment
    std::string err = error_in_child([&] { decomp::hungarian_max(s); });
    CHECK_MESSAGE(has(err, "hungarian_max: score matrix entry (1, 2) is "), err);
    for (int64_t j = 0; j < 3; ++j) s(1, j) = bad;  // a whole row (an inf weight's CI row): the old code hung
    err = error_in_child([&] { decomp::hungarian_max(s); });
    CHECK_MESSAGE(has(err, "hungarian_max: score matrix entry (1, 0) is "), err);
    err = error_in_child([&] { decomp::identity_ci_error(s, nullptr); });
    CHECK_MESSAGE(has(err, "entry (1, 0)"), err);
  }
  decomp::Mat ok(2, 3, 0);
  ok(0, 1) = 1, ok(1, 2) = 1;
  CHECK(decomp::hungarian_max(ok) == std::vector<int64_t>{1, 2});
}

// F5: 10^6 levels of '[' overflowed the stack when a config was parsed. The depth is checked
// by a linear scan before any JSON parser sees the text.
TEST_CASE("hostile JSON: nesting deeper than the limit is refused before parsing") {
  const std::string path = temp_path("deep.json");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ad::write_file_atomic(path, deep);
  std::string err = error_in_child([&] { models::read_json_file(path); });
  CHECK_MESSAGE(has(err, path + ": JSON nests deeper than 100 levels (depth 101"), err);
  ad::write_file_atomic(path, R"({"comment": )" + deep + "}");
  err = error_in_child([&] { models::read_json_file(path); });
  CHECK_MESSAGE(has(err, "(depth 101"), err);
  // Brackets inside strings are text, escaped quotes do not end the string.
  const std::string in_string = R"({"comment": "\"\\\")" + std::string(100000, '[') + R"(", "k": [[1]]})";
  ad::write_file_atomic(path, in_string);
  CHECK(models::read_json_file(path).at("k").at(0).at(0) == 1);
  ad::write_file_atomic(path, std::string(100, '[') + std::string(100, ']'));  // exactly at the limit
  CHECK(models::read_json_file(path).is_array());

  // A safetensors header and checkpoint metadata go through the same check.
  const std::string st = temp_path("deep.safetensors");
  std::string header = R"({"a": )" + deep + "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  const uint64_t n = header.size();
  ad::write_file_atomic(st, std::string(reinterpret_cast<const char*>(&n), 8) + header);
  err = error_in_child([&] { ad::load_safetensors(st); });
  CHECK_MESSAGE(has(err, "safetensors file '" + st + "': header: JSON nests deeper than 100 levels"), err);
  ad::save_safetensors(st, {{"w", ad::zeros(ad::Shape{2})}}, {{"model_config", deep}, {"format", "pd-model-v1"}});
  err = error_in_child([&] { models::load_model(st); });
  CHECK_MESSAGE(has(err, st + ": metadata \"model_config\": JSON nests deeper"), err);
  std::remove(path.c_str());
  std::remove(st.c_str());
}

// F7: nlohmann::json keeps the last of repeated keys, so {"lr": 1e-3, ..., "lr": 1} silently
// trained with lr 1. The one config reader refuses a key repeated in any object.
TEST_CASE("hostile JSON: a key repeated within one object is refused, naming the file and the key path") {
  const std::string path = temp_path("dup.json");
  const std::pair<const char*, const char*> cases[] = {
      {R"({"seed": 1, "C": 4, "seed": 2})", ": seed: the key appears twice in one object"},
      {R"({"train": {"lr": 1e-3, "steps": 5, "lr": 1}})", ": train.lr: the key appears twice"},
      {R"({"losses": [{"name": "a"}, {"name": "b", "coeff": 1, "coeff": 2}]})", ": losses[1].coeff: the key"},
      {R"({"x": [[1, {"k": 0}], [{"k": 1, "k": 2}]]})", ": x[1][0].k: the key"},
  };
  for (const auto& c : cases) {
    ad::write_file_atomic(path, c.first);
    const std::string err = error_in_child([&] { models::read_json_file(path); });
    CHECK_MESSAGE(has(err, path + c.second), err);
  }
  // The same key in different objects, and a key equal to a string value, are fine.
  ad::write_file_atomic(path, R"({"a": {"k": 1}, "b": {"k": 2}, "l": [{"k": 3}, {"k": 4}], "k": "k"})");
  CHECK(models::read_json_file(path).at("l").at(1).at("k") == 4);
  // Through a loader: a run config with "lr" twice.
  ad::write_file_atomic(path, R"({"model": {"type": "tms", "n_features": 5, "d_hidden": 2},
                                  "train": {"steps": 10, "lr": 0.001, "lr": 1.0}})");
  const std::string err = error_in_child([&] { models::load_run_config(path); });
  CHECK_MESSAGE(has(err, path + ": train.lr: the key appears twice"), err);
  std::remove(path.c_str());
}

// F10: errors that named neither the file nor the key. Every one now goes through the one JSON
// parser (ad::parse_json) or the one config reader (models::ConfigSection).
TEST_CASE("hostile messages: number overflow, a folder, a 10 MB key, wrong types and corpus counts name the file and key") {
  const std::string path = temp_path("f10.json");
  const std::string tms = R"({"model": {"type": "tms", "n_features": 5, "n_hidden": 2},
    "data": {"type": "sparse_features", "feature_prob": 0.05}, "train": {"steps": 10, "batch_size": 8, "lr": LR}})";
  std::string cfg = tms;
  cfg.replace(cfg.find("LR"), 2, "1e999");
  ad::write_file_atomic(path, cfg);
  std::string err = error_in_child([&] { models::load_run_config(path); });
  CHECK_MESSAGE(has(err, path + ": invalid JSON: number overflow parsing '1e999'"), err);
  CHECK_MESSAGE(!has(err, "json.exception"), err);

  // A folder given as the config.
  const std::string dir = temp_path("f10_dir");
  ad::prepare_output_dir(dir);
  err = error_in_child([&] { models::load_run_config(dir); });
  CHECK_MESSAGE(has(err, "'" + dir + "': it is a folder, not a file"), err);

  // A 10 MB unknown key is named, cut to 80 characters.
  cfg = tms;
  cfg.replace(cfg.find("LR"), 2, "0.01");
  cfg.insert(1, "\"" + std::string(10 << 20, 'k') + "\": 1, ");
  ad::write_file_atomic(path, cfg);
  err = error_in_child([&] { models::load_run_config(path); });
  CHECK_MESSAGE(has(err, path + ": " + std::string(80, 'k') + "... (10485760 bytes): unknown key"), err);
  CHECK(err.size() < 400);

  // builtin:stories:N with N not a number used to be "stoll"; a huge N would generate forever.
  for (const char* n : {"abc", "99999999999999999999", "0"}) {
    ad::write_file_atomic(path, std::string(R"({"model": {"type": "tiny_lm", "d_model": 8, "n_layers": 1, "n_heads": 1,
      "max_len": 8}, "data": {"type": "text", "corpus": "builtin:stories:)") + n + R"(", "seq_len": 4},
      "train": {"steps": 1, "batch_size": 1, "lr": 0.01}})");
    err = error_in_child([&] { models::load_run_config(path); });
    CHECK_MESSAGE(has(err, path + ": data.corpus: corpus 'builtin:stories:" + n + "': N in builtin:stories:N"), err);
  }

  // Safetensors header and checkpoint metadata: the same parser, the same message.
  const std::string st = temp_path("f10.safetensors");
  std::string header = R"({"__metadata__": {"x": "1"}, "a": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 4]}})";
  const uint64_t n = header.size();
  ad::write_file_atomic(st, std::string(reinterpret_cast<const char*>(&n), 8) + header + "abcd");
  err = error_in_child([&] { ad::load_safetensors(st); });
  CHECK_MESSAGE(has(err, "safetensors file '" + st + "': header: invalid JSON: number overflow"), err);
  ad::save_safetensors(st, {{"w", ad::zeros(ad::Shape{2})}}, {{"model_config", "[1e999]"}, {"format", "pd-model-v1"}});
  err = error_in_child([&] { models::load_model(st); });
  CHECK_MESSAGE(has(err, st + ": metadata \"model_config\": invalid JSON: number overflow"), err);

  // Found by the fuzzing suite: a target model with a NaN weight trained into a NaN loss
  // whose error named no file. Loaded parameters must be finite.
  ad::Rng rng(0);
  std::unique_ptr<models::Model> m = models::make_model(nlohmann::json::parse(R"({"type": "tms", "n_features": 5, "n_hidden": 2})"), rng);
  m->parameters()[0].value.set_item(3, std::nan(""));
  models::save_model(*m, st);
  err = error_in_child([&] { models::load_model(st); });
  CHECK_MESSAGE(has(err, st + ": tensor '" + m->parameters()[0].name + "' of the tms model has a non-finite value at flat index 3"), err);
  std::remove(path.c_str());
  std::remove(st.c_str());
  std::remove(dir.c_str());
}
