#!/usr/bin/env python3
"""pd vs plain PyTorch eager on the same SPD or APD training step, measured in one run.

For each workload it alternates `build/pd bench <workload>` and the PyTorch script of the same
step (`spd_step_bench.py` for spd_*, `apd_step_bench.py` for apd_*, `vpd_step_bench.py` for
vpd_*, given the vocabulary pd reports; `--threads 1,2`) for
--rounds rounds (so both see the same machine), and prints one JSON line per workload: the
median over rounds of pd's median steps/s, of PyTorch's best-thread-setting steps/s, their
ratio, and both processes' peak resident memory (max_rss_kb; PyTorch's includes its libraries,
reported alone as pytorch_baseline_rss_kb where the script measures it). Figures only; nothing
is asserted.

Usage: /usr/bin/python3 experiments/pytorch/compare_speed.py [--rounds 3] [--seconds 3]
           [--pd build/pd] [workload ...]
       (default: spd_tms_5-2 spd_tms_40-10 spd_resid_mlp1 apd_tms_5-2 apd_tms_40-10 apd_resid_mlp1;
        also vpd_ih vpd_tiny_lm)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def last_json(text):
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("no JSON line in output:\n" + text)
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="*", default=["spd_tms_5-2", "spd_tms_40-10", "spd_resid_mlp1", "apd_tms_5-2",
                                                     "apd_tms_40-10", "apd_resid_mlp1"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--pd", default="build/pd")
    a = ap.parse_args()
    for w in a.workloads:
        script = {"apd_": "apd_step_bench.py", "vpd_": "vpd_step_bench.py"}.get(w[:4], "spd_step_bench.py")
        pd_sps, torch_sps, torch_threads, pd_rss, torch_rss, torch_base = [], [], [], [], [], []
        for _ in range(a.rounds):
            out = subprocess.run([a.pd, "bench", w], check=True, capture_output=True, text=True).stdout
            pd_sps.append(last_json(out)["steps_per_s"])
            pd_rss.append(last_json(out).get("max_rss_kb"))
            extra = ["--vocab", str(last_json(out)["vocab"])] if w.startswith("vpd_") else []
            out = subprocess.run([sys.executable, os.path.join(HERE, script), w, "--threads", "1,2",
                                  "--seconds", str(a.seconds)] + extra, check=True, capture_output=True, text=True).stdout
            best = last_json(out)
            torch_sps.append(best["steps_per_s"])
            torch_threads.append(best["best_threads"])
            torch_rss.append(best.get("max_rss_kb"))
            torch_base.append(best.get("baseline_rss_kb"))
        p, t = statistics.median(pd_sps), statistics.median(torch_sps)
        print(json.dumps({"bench": w, "rounds": a.rounds, "pd_steps_per_s": round(p, 2),
                          "pytorch_steps_per_s": round(t, 3), "ratio": round(p / t, 2),
                          "pd_all": [round(x, 2) for x in pd_sps], "pytorch_all": torch_sps,
                          "pytorch_best_threads": torch_threads, "pd_max_rss_kb": max(pd_rss),
                          "pytorch_max_rss_kb": max(torch_rss), "pytorch_baseline_rss_kb": torch_base[-1]}),
              flush=True)


if __name__ == "__main__":
    main()
