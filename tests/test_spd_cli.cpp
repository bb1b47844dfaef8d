// pd decompose end to end through its command-line entry (in process): a short run, then
// --evaluate of the saved decomposition, which must reproduce the run's own evaluation and
// accept new evaluation fields but refuse a changed training field.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "autodiff/safetensors.hpp"
#include "experiments/cli.hpp"
#include "tests/cli_test_util.hpp"

using nlohmann::json;

TEST_CASE("pd decompose --evaluate re-evaluates a saved decomposition exactly; training fields must match") {
  const std::string dir = make_tmp_dir();
  json spd = write_tiny_tms_configs(dir);
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/run", "--quiet"}) == 0);
  const json ran = json::parse(ad::read_file(dir + "/run/metrics.json"));

  // Same config: the evaluation is reproduced bit for bit (same evaluation seed and inputs).
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--evaluate", dir + "/run/decomposition.safetensors", "--quiet"}) == 0);
  const json re = json::parse(ad::read_file(dir + "/run/reevaluated/metrics.json"));
  CHECK(re["layers"] == ran["layers"]);
  CHECK(re["eval_losses"] == ran["eval_losses"]);
  CHECK(re["evaluated_from"] == dir + "/run/decomposition.safetensors");
  CHECK(!re.contains("final_train_losses"));

  // A new evaluation field (a cross-layer group) is accepted and reported.
  spd["dense_k_groups"] = json::parse(R"([{"name": "both", "layers": ["linear1", "linear2"], "k": 2}])");
  ad::write_file_atomic(dir + "/spd_groups.json", spd.dump());
  REQUIRE(run_pd({"decompose", dir + "/spd_groups.json", "--evaluate", dir + "/run/decomposition.safetensors", "--out",
                  dir + "/groups", "--quiet"}) == 0);
  const json g = json::parse(ad::read_file(dir + "/groups/metrics.json"));
  CHECK(g["dense_k_groups"]["both"]["dense_k"] == 2);
  CHECK(g["dense_k_groups"]["both"]["layers"].size() == 2);
  CHECK(g["layers"] == ran["layers"]);
  CHECK(access((dir + "/groups/ci_group_both.gp").c_str(), F_OK) == 0);  // its heatmap script

  // So is another checkpoint frequency (it does not change the run).
  spd["train"]["checkpoint_every"] = 7;
  ad::write_file_atomic(dir + "/spd_ckpt.json", spd.dump());
  CHECK(run_pd({"decompose", dir + "/spd_ckpt.json", "--evaluate", dir + "/run/decomposition.safetensors", "--out",
                dir + "/ckpt", "--quiet"}) == 0);

  // A changed training field is refused (exit 1, nothing written).
  spd["train"]["lr"] = 2e-3;
  ad::write_file_atomic(dir + "/spd_lr.json", spd.dump());
  CHECK(run_pd({"decompose", dir + "/spd_lr.json", "--evaluate", dir + "/run/decomposition.safetensors", "--out",
                dir + "/lr", "--quiet"}) == 1);
  CHECK(access((dir + "/lr/metrics.json").c_str(), F_OK) != 0);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("pd decompose --evaluate of an unfinished run's checkpoint equals a run stopped there; the run still resumes") {
  const std::string dir = make_tmp_dir();
  json spd = write_tiny_tms_configs(dir);
  // The 30-step run stopped after 20 steps, and a separate 20-step run of the same config.
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/stopped", "--stop-after", "20", "--quiet"}) == 0);
  REQUIRE(access((dir + "/stopped/checkpoint.safetensors").c_str(), F_OK) == 0);
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/short", "--steps", "20", "--quiet"}) == 0);
  const json short_run = json::parse(ad::read_file(dir + "/short/metrics.json"));

  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--evaluate", dir + "/stopped/checkpoint.safetensors", "--quiet"}) == 0);
  const json mid = json::parse(ad::read_file(dir + "/stopped/evaluated_step_20/metrics.json"));
  CHECK(mid["evaluated_at_step"] == 20);
  CHECK(mid["layers"] == short_run["layers"]);
  CHECK(mid["eval_losses"] == short_run["eval_losses"]);
  CHECK(access((dir + "/stopped/evaluated_step_20/loss_curves.csv").c_str(), F_OK) == 0);

  // Against the 20-step config the checkpoint is refused (train.steps differs), nothing written.
  CHECK(run_pd({"decompose", dir + "/spd.json", "--steps", "20", "--evaluate", dir + "/stopped/checkpoint.safetensors",
                "--out", dir + "/wrong", "--quiet"}) == 1);
  CHECK(access((dir + "/wrong/metrics.json").c_str(), F_OK) != 0);

  // The evaluation left the checkpoint alone: resuming finishes the 30-step run.
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--resume", dir + "/stopped/checkpoint.safetensors", "--quiet"}) == 0);
  CHECK(access((dir + "/stopped/decomposition.safetensors").c_str(), F_OK) == 0);
  CHECK(access((dir + "/stopped/checkpoint.safetensors").c_str(), F_OK) != 0);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("pd decompose runs an APD config end to end (stop, resume, --evaluate); pd compare tables SPD and APD runs") {
  const std::string dir = make_tmp_dir();
  json spd = write_tiny_tms_configs(dir);
  json apd = json::parse(R"({
    "method": "apd", "seed": 1, "C": 5, "m": 3, "topk": 0.25, "eval_batch": 500,
    "losses": [{"name": "faithfulness", "coeff": 1}, {"name": "minimality", "coeff": 1},
               {"name": "simplicity", "coeff": 0.7, "p": 1}],
    "train": {"steps": 30, "batch_size": 128, "lr": 3e-3, "schedule": "constant", "log_every": 10}
  })");
  apd["target"] = spd["target"];
  ad::write_file_atomic(dir + "/apd.json", apd.dump());
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/spd_run", "--quiet"}) == 0);
  REQUIRE(run_pd({"decompose", dir + "/apd.json", "--out", dir + "/apd_run", "--quiet"}) == 0);
  // stopped at 12 and resumed: the same decomposition as the uninterrupted run
  REQUIRE(run_pd({"decompose", dir + "/apd.json", "--out", dir + "/apd_stopped", "--stop-after", "12", "--quiet"}) == 0);
  REQUIRE(run_pd({"decompose", dir + "/apd.json", "--resume", dir + "/apd_stopped/checkpoint.safetensors", "--quiet"}) == 0);
  auto read = [](const std::string& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  {  // the same bits in every tensor (the metadata names each run's own target path)
    const ad::SafeTensors a = ad::load_safetensors(dir + "/apd_run/decomposition.safetensors"),
                          b = ad::load_safetensors(dir + "/apd_stopped/decomposition.safetensors");
    REQUIRE(a.tensors.size() == b.tensors.size());
    for (const auto& [name, t] : a.tensors) CHECK(t.to_vector() == b.tensors.at(name).to_vector());
  }
  const json m = json::parse(read(dir + "/apd_run/metrics.json"));
  CHECK(m["method"] == "apd");
  CHECK(m["layers"]["linear1"]["C"] == 5);
  CHECK(m["layers"]["linear1"].contains("identity_ci_error"));
  CHECK(m.contains("mmcs"));
  REQUIRE(run_pd({"decompose", dir + "/apd.json", "--evaluate", dir + "/apd_run/decomposition.safetensors", "--out",
                  dir + "/apd_eval", "--quiet"}) == 0);
  CHECK(json::parse(read(dir + "/apd_eval/metrics.json"))["mmcs"] == m["mmcs"]);
  REQUIRE(run_pd({"compare", dir + "/apd_run", dir + "/spd_run", "--out", dir + "/table.md"}) == 0);
  const std::string table = read(dir + "/table.md");
  const size_t spd_row = table.find("| spd |"), apd_row = table.find("| apd |");
  CHECK(spd_row != std::string::npos);
  CHECK(apd_row != std::string::npos);
  CHECK(spd_row < apd_row);  // SPD first within a target
  const std::string missing = dir + "/metrics.json";
  CHECK_THROWS_WITH(run_pd({"compare", dir}), doctest::Contains(missing.c_str()));
  // A metrics.json with a wrong type was "type must be string, but is number" (issue 21 F10).
  json bad = m;
  bad["target"] = 5;
  ad::write_file_atomic(dir + "/metrics.json", bad.dump());
  CHECK_THROWS_WITH(run_pd({"compare", dir}), doctest::Contains((missing + ": target: expected a string, got integer 5").c_str()));
  bad = m;
  bad["layers"] = json::array({1, 2});
  ad::write_file_atomic(dir + "/metrics.json", bad.dump());
  CHECK_THROWS_WITH(run_pd({"compare", dir}), doctest::Contains((missing + ": layers: expected an object").c_str()));
  std::system(("rm -rf " + dir).c_str());
}

// Runs a pd subcommand with stderr captured; returns what it printed there, *rc its exit code.
static std::string run_pd_stderr(std::vector<std::string> args, int* rc) {
  char path[] = "/tmp/pd_cli_stderrXXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  std::fflush(stderr);
  const int saved = dup(2);
  dup2(fd, 2);
  *rc = run_pd(std::move(args));
  std::cerr.flush();
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(fd);
  const std::string text = ad::read_file(path);
  unlink(path);
  return text;
}

// Issue 21 F7: these options use -1 for "not given", so -5 used to be silently ignored.
TEST_CASE("pd decompose, pd train and pd audit refuse negative or fractional counts and seeds on the command line") {
  const std::string dir = make_tmp_dir();
  write_tiny_tms_configs(dir);
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"decompose", dir + "/spd.json", "--steps", "-5"}, "--steps: must be a whole number >= 0, got -5"},
      {{"decompose", dir + "/spd.json", "--stop-after", "-5"}, "--stop-after: must be a whole number >= 0, got -5"},
      {{"decompose", dir + "/spd.json", "--seed", "-5"}, "--seed: must be a whole number >= 0, got -5"},
      {{"decompose", dir + "/spd.json", "--steps", "2.7"}, "--steps: must be a whole number >= 0, got 2.7"},
      {{"train", dir + "/tms.json", "--stop-after", "-5"}, "--stop-after: must be a whole number >= 0, got -5"},
      {{"audit", dir + "/spd.json", "--coords", "0"}, "--coords: must be a whole number >= 1, got 0"},
      {{"audit", dir + "/spd.json", "--batch", "-1"}, "--batch: must be a whole number >= 1, got -1"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = c.first;
    args.insert(args.end(), {"--out", dir + "/out", "--quiet"});
    if (args[0] == "audit") args.resize(c.first.size());  // pd audit writes nothing, takes no --out
    int rc = 0;
    const std::string err = run_pd_stderr(args, &rc);
    CAPTURE(args[0]);
    CHECK(rc != 0);
    CHECK_MESSAGE(err.find(c.second) != std::string::npos, err);
    CHECK(access((dir + "/out").c_str(), F_OK) != 0);  // refused before anything ran
  }
  std::system(("rm -rf " + dir).c_str());
}

// Issue 21 F7: a dense_k entry naming a layer that is not decomposed was ignored, and a bad
// dense_k_groups layer failed only in the final evaluation, after all the training.
TEST_CASE("pd decompose refuses dense_k and dense_k_groups layers that are not decomposed, before any training") {
  const std::string dir = make_tmp_dir();
  json spd = write_tiny_tms_configs(dir);
  const json base = spd;
  spd["dense_k"] = {{"linear2", 2}, {"linear3", 2}};
  ad::write_file_atomic(dir + "/dk.json", spd.dump());
  int rc = 0;
  std::string err = run_pd_stderr({"decompose", dir + "/dk.json", "--out", dir + "/dk", "--quiet"}, &rc);
  CHECK(rc == 1);
  CHECK_MESSAGE(err.find(dir + "/dk.json: dense_k.linear3: no decomposed layer 'linear3' (the tms target decomposes "
                               "linear1, linear2)") != std::string::npos, err);
  CHECK(access((dir + "/dk/target").c_str(), F_OK) != 0);  // the target was not trained

  spd = base;
  spd["target"]["layers"] = {"linear1"};  // linear2 exists but is not decomposed
  spd["dense_k_groups"] = json::parse(R"([{"name": "g", "layers": ["linear1", "linear2"], "k": 2}])");
  ad::write_file_atomic(dir + "/groups.json", spd.dump());
  err = run_pd_stderr({"decompose", dir + "/groups.json", "--out", dir + "/groups", "--quiet"}, &rc);
  CHECK(rc == 1);
  CHECK_MESSAGE(err.find(dir + "/groups.json: dense_k_groups[0].layers: no decomposed layer 'linear2'") != std::string::npos, err);
  CHECK(access((dir + "/groups/target").c_str(), F_OK) != 0);
  std::system(("rm -rf " + dir).c_str());
}

// Issue 21 F9: an unwritable output folder was found only when the results were saved, after
// all the training. F8: temporaries of killed writers stayed in the folder for good.
TEST_CASE("pd decompose and pd train check the output folder before training and remove temp files killed runs left") {
  const std::string dir = make_tmp_dir();
  write_tiny_tms_configs(dir);
  ad::write_file_atomic(dir + "/file", "a file, not a folder");
  int rc = 0;
  std::string err = run_pd_stderr({"decompose", dir + "/spd.json", "--out", dir + "/file/out", "--quiet"}, &rc);
  CHECK(rc == 1);
  CHECK_MESSAGE(err.find("cannot create output folder '" + dir + "/file/out'") != std::string::npos, err);
  if (access("/proc/self", F_OK) == 0) {  // a folder nobody can write, root included
    err = run_pd_stderr({"decompose", dir + "/spd.json", "--out", "/proc/self", "--quiet"}, &rc);
    CHECK(rc == 1);
    CHECK_MESSAGE(err.find("output folder '/proc/self' is not writable") != std::string::npos, err);
  }

  // Temporaries of a process that no longer runs go; a running one's and other files stay.
  const pid_t dead = fork();
  REQUIRE(dead >= 0);
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  const std::string gone = std::to_string((long)dead), alive = std::to_string((long)getpid());
  for (const std::string& run : {dir + "/dec", dir + "/train"}) {
    std::system(("mkdir -p " + run).c_str());
    for (const std::string& f : {"checkpoint.safetensors.tmp." + gone + ".3", "metrics.json.tmp." + gone + ".0",
                                 "metrics.json.tmp." + alive + ".7", std::string("notes.tmp.txt")})
      ad::write_file_atomic(run + "/" + f, "x");
  }
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/dec", "--stop-after", "5", "--quiet"}) == 0);
  REQUIRE(run_pd({"train", dir + "/tms.json", "--out", dir + "/train", "--stop-after", "5", "--quiet"}) == 0);
  for (const std::string& run : {dir + "/dec", dir + "/train"}) {
    CAPTURE(run);
    CHECK(access((run + "/checkpoint.safetensors.tmp." + gone + ".3").c_str(), F_OK) != 0);
    CHECK(access((run + "/metrics.json.tmp." + gone + ".0").c_str(), F_OK) != 0);
    CHECK(access((run + "/metrics.json.tmp." + alive + ".7").c_str(), F_OK) == 0);
    CHECK(access((run + "/notes.tmp.txt").c_str(), F_OK) == 0);
    CHECK(access((run + "/checkpoint.safetensors").c_str(), F_OK) == 0);  // the stopped run's own
  }
  std::system(("rm -rf " + dir).c_str());
}

// Issue 21 F11: pd train's non-finite stop names the first bad op (the same replay under the
// NaN guard as pd decompose); a non-finite faithfulness warmup says it was the warmup.
TEST_CASE("pd train and pd decompose name the first non-finite op; a diverging warmup is reported as the warmup") {
  const std::string dir = make_tmp_dir();
  json spd = write_tiny_tms_configs(dir);
  json target = json::parse(ad::read_file(dir + "/tms.json"));
  target["train"]["lr"] = 1e30;  // the weights reach 1e30 after one step: W^T W x overflows
  ad::write_file_atomic(dir + "/diverge.json", target.dump());
  CHECK_THROWS_WITH(run_pd({"train", dir + "/diverge.json", "--out", dir + "/t", "--quiet"}),
                    doctest::Contains("training: the loss is not finite at step 1 (loss = inf); first non-finite op: "
                                      "NaN guard: forward of op 'linear'"));
  REQUIRE(run_pd({"train", dir + "/tms.json", "--out", dir + "/target", "--quiet"}) == 0);
  spd["train"]["faith_warmup_steps"] = 3;
  spd["train"]["faith_warmup_lr"] = 1e30;
  ad::write_file_atomic(dir + "/warm.json", spd.dump());
  int rc = 0;
  const std::string err = run_pd_stderr({"decompose", dir + "/warm.json", "--target-checkpoint",
                                         dir + "/target/model.safetensors", "--out", dir + "/d", "--quiet"}, &rc);
  CHECK(rc == 1);
  CHECK_MESSAGE(err.find("spd faithfulness warmup (before training step 0, 3 warmup steps): the loss is not finite at "
                         "step 1 (faithfulness = inf); first non-finite op: NaN guard: forward of op 'matmul'") !=
                    std::string::npos, err);
  std::system(("rm -rf " + dir).c_str());
}

// Issue 21 F2: with C smaller than n_features (TMS 5-2, C 4) the CI plot read past the CI matrix
// (a heap overflow under ASan; garbage columns in ci_linear1.dat in a release build).
TEST_CASE("pd decompose with fewer components than features plots C columns of CI values") {
  const std::string dir = make_tmp_dir();
  json spd = write_tiny_tms_configs(dir);
  spd["C"] = 4;
  spd["train"]["steps"] = 5;
  ad::write_file_atomic(dir + "/spd.json", spd.dump());
  REQUIRE(run_pd({"decompose", dir + "/spd.json", "--out", dir + "/run", "--quiet"}) == 0);
  std::istringstream dat(ad::read_file(dir + "/run/ci_linear1.dat"));
  int rows = 0;
  for (std::string line; std::getline(dat, line); ++rows) {
    std::istringstream cols(line);
    int n = 0;
    for (double v; cols >> v; ++n) CHECK((v >= 0 && v <= 1));
    CHECK(n <= 4);
  }
  CHECK(rows == 5);  // one row per feature
  std::system(("rm -rf " + dir).c_str());
}
