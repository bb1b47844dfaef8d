// Crash safety: a short pd train and pd decompose run is killed with SIGKILL at seeded moments
// (fractions of the uninterrupted run's duration, so the kills land inside the run on any
// machine), resumed from its last checkpoint each time (started again when none was written
// yet), and finally run to the end. After every kill each file in the output folder must parse
// (temporary files of the killed writer aside: the next start removes them), and the finished
// run must hold the uninterrupted run's exact bits.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "autodiff/random.hpp"
#include "autodiff/safetensors.hpp"
#include "models/config.hpp"
#include "tests/child_process.hpp"
#include "tests/fuzz/fixtures.hpp"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

bool is_temp(const std::string& name) { return name.find(".tmp.") != std::string::npos; }

// Every JSON and safetensors file in `dir` parses; returns how many temp files there are.
int check_files_parse(const std::string& dir) {
  int temps = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string p = e.path().string(), ext = e.path().extension().string();
    if (is_temp(p)) {
      ++temps;
      continue;
    }
    if (ext == ".json") CHECK_NOTHROW(models::read_json_file(p));
    if (ext == ".safetensors") CHECK_NOTHROW(ad::load_safetensors(p));
    if (ext == ".csv") CHECK_FALSE(ad::read_file(p).empty());
  }
  return temps;
}

// Runs pd `args` (no --out) into ref/ uninterrupted, then into killed/ with `kills` SIGKILLs and
// resumes; returns {ref, killed} folders.
std::pair<std::string, std::string> kill_and_resume(const std::vector<std::string>& args, int kills, uint64_t seed) {
  const std::string pd = testutil::sibling_binary("pd"), dir = testutil::make_temp_dir("pd_kill_");
  const std::string ref = dir + "/ref", killed = dir + "/killed", ckpt = killed + "/checkpoint.safetensors";
  auto with = [&](const std::string& out, bool resume) {
    std::vector<std::string> a{pd};
    a.insert(a.end(), args.begin(), args.end());
    a.insert(a.end(), {"--out", out, "--quiet"});
    if (resume) a.insert(a.end(), {"--resume", ckpt});
    return a;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const testutil::ProcessResult r = testutil::run_program(with(ref, false), 600);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ad::Rng rng(seed);
  int landed = 0;
  for (int k = 0; k < kills; ++k) {
    const int pid = testutil::start_program(with(killed, fs::exists(ckpt)), dir + "/log.txt");
    usleep((useconds_t)(rng.uniform(0.1, 0.9) * run_s * 1e6));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    landed += WIFSIGNALED(status);
    if (fs::exists(killed)) check_files_parse(killed);
  }
  MESSAGE(landed, " of ", kills, " kills landed inside the run");
  const testutil::ProcessResult fin = testutil::run_program(with(killed, fs::exists(ckpt)), 600);
  REQUIRE_MESSAGE(fin.exit_code == 0, fin.output);
  CHECK(check_files_parse(killed) == 0);  // the last start removed the killed writers' temp files
  return {ref, killed};
}

void check_same_tensors(const std::string& a, const std::string& b) {
  const ad::SafeTensors x = ad::load_safetensors(a), y = ad::load_safetensors(b);
  REQUIRE(x.tensors.size() == y.tensors.size());
  for (const auto& [name, t] : x.tensors) {
    REQUIRE(y.tensors.count(name));
    CHECK_MESSAGE(t.to_vector() == y.tensors.at(name).to_vector(), name);
  }
}

}  // namespace

TEST_CASE("crash safety: pd train killed with SIGKILL at seeded moments, then resumed, ends with the uninterrupted bits") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  json cfg = models::read_json_file(fx.run_config);
  cfg["train"]["steps"] = 3000;
  cfg["train"]["checkpoint_every"] = 100;
  const std::string path = fx.dir + "/kill_train.json";
  ad::write_file_atomic(path, cfg.dump());
  const auto [ref, killed] = kill_and_resume({"train", path}, 4, 11);
  CHECK(ad::read_file(ref + "/model.safetensors") == ad::read_file(killed + "/model.safetensors"));
  fs::remove_all(fs::path(ref).parent_path());
}

TEST_CASE("crash safety: pd decompose killed with SIGKILL at seeded moments, then resumed, ends with the uninterrupted bits") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  json cfg = models::read_json_file(fx.spd_config);
  cfg["train"]["steps"] = 300;
  cfg["train"]["checkpoint_every"] = 10;
  const std::string path = fx.dir + "/kill_spd.json";
  ad::write_file_atomic(path, cfg.dump());
  const auto [ref, killed] = kill_and_resume({"decompose", path, "--target-checkpoint", fx.model}, 4, 12);
  check_same_tensors(ref + "/decomposition.safetensors", killed + "/decomposition.safetensors");
  fs::remove_all(fs::path(ref).parent_path());
}

TEST_CASE("crash safety: pd sweep killed with SIGKILL (its whole process group) at seeded moments, then restarted, ends with the uninterrupted runs") {
  const fuzz::Fixtures& fx = fuzz::fixtures();
  json cfg = models::read_json_file(fx.spd_config);
  cfg["train"]["steps"] = 300;
  const std::string path = fx.dir + "/kill_sweep.json";
  ad::write_file_atomic(path, cfg.dump());
  const std::string pd = testutil::sibling_binary("pd"), dir = testutil::make_temp_dir("pd_kill_sweep_");
  auto sweep = [&](const std::string& out) {
    return std::vector<std::string>{pd, "sweep", path, "--seeds", "0-1", "--jobs", "2", "--target-checkpoint", fx.model,
                                    "--checkpoint-every", "10", "--pd", pd, "--out", out};
  };
  const auto t0 = std::chrono::steady_clock::now();
  const testutil::ProcessResult r = testutil::run_program(sweep(dir + "/ref"), 600);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ad::Rng rng(13);
  int landed = 0;
  const std::string killed = dir + "/killed";
  for (int k = 0; k < 3; ++k) {
    const int pid = testutil::start_program(sweep(killed), dir + "/log.txt");
    usleep((useconds_t)(rng.uniform(0.05, 0.45) * run_s * 1e6));  // early: a restarted sweep has less left
    kill(-pid, SIGKILL);  // the sweep and the runs it started, as a lost machine or a closed terminal would
    int status = 0;
    waitpid(pid, &status, 0);
    landed += WIFSIGNALED(status);
    for (const char* s : {"/base/seed_0", "/base/seed_1"})
      if (fs::exists(killed + s)) check_files_parse(killed + s);
  }
  MESSAGE(landed, " of 3 kills landed inside the sweep");
  CHECK(landed >= 1);  // otherwise nothing was interrupted
  const testutil::ProcessResult fin = testutil::run_program(sweep(killed), 600);
  REQUIRE_MESSAGE(fin.exit_code == 0, fin.output);
  for (const char* s : {"/base/seed_0", "/base/seed_1"})
    check_same_tensors(dir + "/ref" + s + "/decomposition.safetensors", killed + s + "/decomposition.safetensors");
  auto without_times = [](const std::string& csv) {
    std::string out, line;
    for (size_t a = 0, b; a < csv.size(); a = b + 1) {
      b = csv.find('\n', a);
      if (b == std::string::npos) b = csv.size();
      line = csv.substr(a, b - a);
      if (line.find("wall_time_s") == std::string::npos) out += line + "\n";
    }
    return out;
  };
  CHECK(without_times(ad::read_file(dir + "/ref/summary.csv")) == without_times(ad::read_file(killed + "/summary.csv")));
  fs::remove_all(dir);
}
