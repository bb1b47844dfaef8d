#include "experiments/sweep.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "decomp/config.hpp"
#include "experiments/process.hpp"
#include "experiments/report_html.hpp"
#include "experiments/run_summary.hpp"
#include "models/config.hpp"

namespace pd {

using nlohmann::json;

std::vector<int64_t> parse_seeds(const std::string& s) {
  std::vector<int64_t> out;
  auto bad = [&]() { ad::fail("--seeds: expected e.g. 0-4 or 0,2,5 (whole numbers >= 0), got '" + s + "'"); };
  auto number = [&](const std::string& t) {
    if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos) bad();
    return (int64_t)std::stoll(t);
  };
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    const std::string part = s.substr(start, end - start);
    const size_t dash = part.find('-');
    if (dash == std::string::npos) {
      out.push_back(number(part));
    } else {
      const int64_t a = number(part.substr(0, dash)), b = number(part.substr(dash + 1));
      if (b < a || b - a > 10000) bad();
      for (int64_t v = a; v <= b; ++v) out.push_back(v);
    }
    start = end + 1;
  }
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (out[i] == out[j]) ad::fail("--seeds: seed " + std::to_string(out[i]) + " given twice in '" + s + "'");
  return out;
}

std::pair<std::string, std::vector<json>> parse_set(const std::string& arg) {
  const size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
    ad::fail("--set '" + arg + "': expected key=value[,value...] (a dotted config key, e.g. train.lr=1e-3,3e-3)");
  std::vector<json> values;
  std::string cur;
  int depth = 0;
  auto push = [&]() {
    if (cur.empty()) ad::fail("--set '" + arg + "': empty value");
    json v;
    try {
      v = json::parse(cur);
    } catch (const json::parse_error&) {
      v = cur;  // a bare word: a string value
    }
    values.push_back(v);
    cur.clear();
  };
  for (char c : arg.substr(eq + 1)) {
    if (c == '[' || c == '{') ++depth;
    if (c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) push();
    else cur += c;
  }
  push();
  return {arg.substr(0, eq), values};
}

void set_dotted(json& cfg, const std::string& key, const json& v, const std::string& source) {
  json* node = &cfg;
  size_t start = 0;
  for (;;) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) ad::fail(source + ": --set key '" + key + "': empty part");
    const bool last = dot == std::string::npos;
    if (node->is_array()) {
      if (part.size() > 9 || part.find_first_not_of("0123456789") != std::string::npos || std::stoul(part) >= node->size())
        ad::fail(source + ": --set key '" + key + "': '" + part + "' is not an index of that array");
      node = &(*node)[std::stoul(part)];
    } else if (node->is_object()) {
      if (!last && !node->contains(part))
        ad::fail(source + ": --set key '" + key + "': the config has no '" + key.substr(0, dot) + "'");
      node = &(*node)[part];
    } else {
      ad::fail(source + ": --set key '" + key + "': '" + key.substr(0, start ? start - 1 : 0) + "' is not an object");
    }
    if (last) break;
    start = dot + 1;
  }
  *node = v;
}

static std::string file_safe_value(const json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.dump(), o;
  for (char c : s) o += (std::isalnum((unsigned char)c) || c == '.' || c == '-' || c == '+') ? c : '_';
  return o;
}

std::vector<GridPoint> make_grid(const json& base, const std::vector<std::pair<std::string, std::vector<json>>>& sets,
                                 const std::string& source) {
  std::vector<GridPoint> grid = {{"", base}};
  for (const auto& [key, values] : sets) {
    std::vector<GridPoint> next;
    for (const GridPoint& g : grid)
      for (const json& v : values) {
        GridPoint p{g.name + (g.name.empty() ? "" : "_") + key + "-" + file_safe_value(v), g.config};
        set_dotted(p.config, key, v, source);
        next.push_back(p);
      }
    grid = next;
  }
  if (sets.empty()) grid[0].name = "base";
  return grid;
}

namespace {

struct Job {
  std::string point, run_dir, log;
  int64_t seed;
  pid_t pid = 0;
};

std::string duration(double s) {
  char buf[32];
  if (s < 90) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 5400) std::snprintf(buf, sizeof buf, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  else std::snprintf(buf, sizeof buf, "%.0fh%02.0fm", std::floor(s / 3600), std::floor(std::fmod(s, 3600) / 60));
  return buf;
}

std::vector<std::string> child_args(const SweepOptions& o, const Job& j, const std::string& config) {
  std::vector<std::string> a = {o.pd_program, "decompose", config, "--out", j.run_dir, "--seed", std::to_string(j.seed), "--quiet"};
  if (o.steps >= 0) a.insert(a.end(), {"--steps", std::to_string(o.steps)});
  if (o.stop_after >= 0) a.insert(a.end(), {"--stop-after", std::to_string(o.stop_after)});
  if (!o.target_checkpoint.empty()) a.insert(a.end(), {"--target-checkpoint", o.target_checkpoint});
  const std::string ckpt = j.run_dir + "/checkpoint.safetensors";
  if (std::filesystem::exists(ckpt)) a.insert(a.end(), {"--resume", ckpt});
  return a;
}

}  // namespace

namespace {

// A finished run found in the sweep folder must have been made with the grid point's config
// (seed and --steps applied; target checkpoint and checkpoint frequency aside), else the sweep
// would summarise a stale run.
void require_made_with(const std::string& run_dir, json cfg, int64_t seed, int64_t steps) {
  const std::string file = run_dir + "/metrics.json";
  json made = models::read_json_file(file).value("config", json::object());
  cfg["seed"] = seed;
  if (steps >= 0) cfg["train"]["steps"] = steps;
  for (json* c : {&cfg, &made}) {
    if (c->contains("target") && (*c)["target"].is_object()) (*c)["target"].erase("checkpoint");
    if (c->contains("train") && (*c)["train"].is_object()) (*c)["train"].erase("checkpoint_every");
  }
  const json diff = json::diff(made, cfg);
  if (!diff.empty())
    ad::fail(file + ": this finished run was made with another config (first difference at " +
             diff[0].value("path", std::string("?")) + "); use another --out or remove the run folder");
}

// The grid's configs written to out/configs/<point>.json, and the runs still to do.
std::vector<Job> plan(const SweepOptions& o, const std::vector<GridPoint>& grid, int* finished) {
  ad::prepare_output_dir(o.out_dir + "/configs");
  ad::prepare_output_dir(o.out_dir + "/logs");
  std::vector<Job> todo;
  *finished = 0;
  for (const GridPoint& g : grid) {
    json cfg = g.config;
    if (o.checkpoint_every > 0) set_dotted(cfg, "train.checkpoint_every", o.checkpoint_every, o.config_path);
    const std::string path = o.out_dir + "/configs/" + g.name + ".json";
    ad::write_file_atomic(path, cfg.dump(2) + "\n");
    decomp::parse_decomp_config(cfg, path);  // an unknown or ill-typed --set key fails here, naming it
    for (int64_t s : o.seeds) {
      Job j{g.name, o.out_dir + "/" + g.name + "/seed_" + std::to_string(s),
            o.out_dir + "/logs/" + g.name + "_seed_" + std::to_string(s) + ".log", s};
      if (std::filesystem::exists(j.run_dir + "/metrics.json")) {
        require_made_with(j.run_dir, cfg, s, o.steps);
        ++*finished;
      } else {
        todo.push_back(j);
      }
    }
  }
  return todo;
}

void progress(int done, int running, int left, double eta_s, bool have_eta) {
  std::fprintf(stderr, "sweep: %d done, %d running, %d left%s\n", done, running, left,
               have_eta ? (", ETA " + duration(eta_s)).c_str() : "");
}

}  // namespace

int run_sweep(const SweepOptions& o_in) {
  SweepOptions o = o_in;
  if (o.seeds.empty()) ad::fail("--seeds: no seeds");
  const int cores = (int)std::max(1u, std::thread::hardware_concurrency());
  if (o.jobs <= 0) o.jobs = cores;
  const int threads = std::max(1, cores / o.jobs);  // jobs * threads <= cores (1 thread each beyond)
  if (o.pd_program.empty()) o.pd_program = std::filesystem::read_symlink("/proc/self/exe").string();
  const json base = models::read_json_file(o.config_path);
  const std::vector<GridPoint> grid = make_grid(base, o.sets, o.config_path);
  int done = 0;
  std::vector<Job> todo = plan(o, grid, &done);
  const int skipped = done;
  if (skipped > 0) std::fprintf(stderr, "sweep: %d run(s) already finished, skipped\n", skipped);
  std::vector<Job> running;
  std::vector<std::string> failed;
  size_t next = 0;
  int stopped = 0, ran = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (next < todo.size() || !running.empty()) {
    while ((int)running.size() < o.jobs && next < todo.size()) {
      Job j = todo[next++];
      const std::string cfg = o.out_dir + "/configs/" + j.point + ".json";
      const int err = spawn_process(child_args(o, j, cfg), j.log, "", {"PD_NUM_THREADS=" + std::to_string(threads)}, &j.pid);
      if (err != 0) ad::fail("cannot start " + o.pd_program + ": " + std::strerror(err));
      running.push_back(j);
      progress(done, (int)running.size(), (int)(todo.size() - next), 0, false);
    }
    bool reaped = false;
    for (size_t i = 0; i < running.size(); ++i) {
      int status = 0;
      const pid_t r = waitpid(running[i].pid, &status, WNOHANG);
      if (r == 0 || (r < 0 && errno == EINTR)) continue;
      const Job j = running[i];
      running.erase(running.begin() + (long)i--);
      reaped = true;
      ++done, ++ran;
      if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        failed.push_back(j.run_dir);
        std::fprintf(stderr, "sweep: run %s failed; its output: %s\n", j.run_dir.c_str(), j.log.c_str());
      } else if (!std::filesystem::exists(j.run_dir + "/metrics.json")) {
        ++stopped;  // --stop-after: a checkpoint, resumed by the next sweep
      }
      const double per_run = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / ran;
      const int left = (int)(todo.size() - next);
      progress(done, (int)running.size(), left, per_run * std::ceil((double)(left + running.size()) / o.jobs), true);
    }
    if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!failed.empty()) {
    std::fprintf(stderr, "sweep: %zu run(s) failed (see their logs); no summary written\n", failed.size());
    return 1;
  }
  if (stopped > 0) {
    std::printf("sweep: %d run(s) stopped at their checkpoints; run the same command again to resume them\n", stopped);
    return 0;
  }
  std::string command = "pd sweep " + o.config_path + " --seeds";
  for (size_t i = 0; i < o.seeds.size(); ++i) command += (i ? "," : " ") + std::to_string(o.seeds[i]);
  for (const auto& [key, values] : o.sets) {
    command += " --set " + key + "=";
    for (size_t i = 0; i < values.size(); ++i) command += (i ? "," : "") + values[i].dump();
  }
  if (o.steps >= 0) command += " --steps " + std::to_string(o.steps);
  write_sweep_summary(o.out_dir, grid, o.seeds, command);
  std::vector<std::string> dirs;
  for (const GridPoint& g : grid)
    for (int64_t s : o.seeds) dirs.push_back(o.out_dir + "/" + g.name + "/seed_" + std::to_string(s));
  const std::string page = write_compare_report(dirs, o.out_dir, "Sweep of " + o.config_path);
  std::printf("sweep: %zu runs finished; %s/summary.csv, %s/summary.md, %s\n", dirs.size(), o.out_dir.c_str(),
              o.out_dir.c_str(), page.c_str());
  return 0;
}

void write_sweep_summary(const std::string& out_dir, const std::vector<GridPoint>& grid,
                         const std::vector<int64_t>& seeds, const std::string& command) {
  std::string csv = "point,metric,n,mean,sd,min,max\n";
  std::string md = "# Sweep summary\n\n`" + command + "`\n\nPer grid point, each metric over the seeds (" +
                   std::to_string(seeds.size()) + "): mean, sample sd, min, max.\n";
  auto g6 = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf);
  };
  for (const GridPoint& g : grid) {
    std::vector<std::string> names;
    std::map<std::string, std::vector<double>> values;
    for (int64_t s : seeds)
      for (const auto& kv : scalar_metrics(read_run(out_dir + "/" + g.name + "/seed_" + std::to_string(s)))) {
        if (!values.count(kv.first)) names.push_back(kv.first);
        values[kv.first].push_back(kv.second);
      }
    md += "\n## " + g.name + "\n\n| metric | n | mean | sd | min | max |\n|---|---|---|---|---|---|\n";
    for (const std::string& n : names) {
      const std::vector<double>& v = values[n];
      double mean = 0, ss = 0;
      for (double x : v) mean += x / (double)v.size();
      for (double x : v) ss += (x - mean) * (x - mean);
      const double sd = v.size() > 1 ? std::sqrt(ss / (double)(v.size() - 1)) : 0.0;
      const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
      const std::string row = std::to_string(v.size()) + "," + g6(mean) + "," + g6(sd) + "," + g6(*mn) + "," + g6(*mx);
      csv += g.name + "," + n + "," + row + "\n";
      md += "| " + n + " | " + std::to_string(v.size()) + " | " + g6(mean) + " | " + g6(sd) + " | " + g6(*mn) + " | " +
            g6(*mx) + " |\n";
    }
  }
  ad::write_file_atomic(out_dir + "/summary.csv", csv);
  ad::write_file_atomic(out_dir + "/summary.md", md);
}

}  // namespace pd
