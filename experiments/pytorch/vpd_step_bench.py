#!/usr/bin/env python3
"""Plain PyTorch (eager, float32) reference of one VPD training step, for comparing with `pd bench`.

The step is the one `pd bench vpd_ih | vpd_tiny_lm` times: one full training step of the
shipped config (experiments/configs/vpd_ih.json, vpd_tiny_lm.json) on a freshly initialised
target of its run config's sizes -- the cached target pass, the global transformer CI function,
faithfulness, importance minimality (frequency term, p at training fraction 0.5), stochastic
subset reconstruction, persistent-PGD subset reconstruction with the sources' inner Adam ascent
steps, one backward, an Adam step over the components and the CI function (no clipping, as the
pd bench) and after_step's ascent step on the sources. The model, CI function, masks, losses
and the source update are tests/torch/vpd_step.py's, the float64 reference that
tests/test_vpd_torch.cpp checks the engine against; here they run in float32 with random
masks and routes drawn by torch. Coefficient-0 monitors are skipped, as at a non-log step.

Workloads (same names as `pd bench`): vpd_ih, vpd_tiny_lm. The tiny LM's vocabulary comes from
its corpus's tokenizer, which this script does not rebuild: --vocab (default 43, the char
tokenizer of builtin:stories; compare_speed.py passes the figure pd reports).

Usage: python3 experiments/pytorch/vpd_step_bench.py vpd_ih [--threads 1,2] [--seconds 3]
Prints one JSON line per thread setting and a final line with the best steps_per_s.
max_rss_kb is getrusage(RUSAGE_SELF).ru_maxrss in KiB (the whole process, torch's libraries
included; baseline_rss_kb is the same figure after importing torch, before the workload).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "torch"))
import vpd_step as vs  # noqa: E402

CONFIGS = {"vpd_ih": "experiments/configs/vpd_ih.json", "vpd_tiny_lm": "experiments/configs/vpd_tiny_lm.json"}


def max_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB


def read(path):
    with open(os.path.join(REPO, path)) as f:
        return json.load(f)


def normal(shape, std):
    return torch.randn(*shape) * std


def target_weights(mc):
    """Random weights of the target (a step's cost does not depend on them), by parameter name."""
    V, D, L = mc["vocab"], mc["d_model"], mc["n_layers"]
    w = {"embed.weight": normal((V, D), 0.02)}
    for i in range(L):
        p = "blocks.%d." % i
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            w[p + "attn.%s.weight" % n] = normal((D, D), 0.02)
        if mc["type"] == "tiny_lm":
            w[p + "attn_norm.weight"] = torch.ones(D)
            w[p + "mlp_norm.weight"] = torch.ones(D)
            w[p + "mlp.c_fc.weight"] = normal((mc["d_mlp"], D), 0.02)
            w[p + "mlp.down_proj.weight"] = normal((D, mc["d_mlp"]), 0.02)
    if mc["type"] == "tiny_lm":
        w["norm.weight"] = torch.ones(D)
    else:
        w["unembed.weight"] = normal((V, D), 0.02)
    return w


def init_params(layers, W, C, ci):
    """Subcomponents (METHODS 3.1) and the CI transformer (decomp/ci_transformer.hpp), as leaves."""
    P = {}
    for l in layers:
        d_out, d_in = W[l].shape
        P[l + ".V"] = normal((d_in, C), 1 / math.sqrt(d_in))
        P[l + ".U"] = normal((C, d_out), 1 / math.sqrt(C))
    D, F = ci["d_model"], ci["d_mlp"]
    total_in = sum(W[l].shape[1] for l in layers)
    for l in layers:
        P["ci_global.in_w." + l] = normal((W[l].shape[1], D), 1 / math.sqrt(total_in))
    P["ci_global.in_b"] = torch.zeros(D)
    for k in range(ci["n_blocks"]):
        b = "ci_global.blocks.%d." % k
        P[b + "attn_norm"], P[b + "mlp_norm"] = torch.ones(D), torch.ones(D)
        for n in ("wq", "wk", "wv", "wo"):
            P[b + n] = normal((D, D), 1 / math.sqrt(D))
        P[b + "w1"], P[b + "b1"] = normal((D, F), math.sqrt(2 / D)), torch.zeros(F)
        P[b + "w2"], P[b + "b2"] = normal((F, D), 1 / math.sqrt(F)), torch.zeros(D)
    P["ci_global.final_norm"] = torch.ones(D)
    for l in layers:
        P["ci_global.out_w." + l], P["ci_global.out_b." + l] = normal((D, C), 1 / math.sqrt(D)), torch.zeros(C)
    return {k: v.requires_grad_() for k, v in P.items()}


def uniform_k_routes(B, M):
    """Per example k ~ U{1..M} and a uniformly random k-subset of the M layers: M tensors [B, 1, 1]."""
    k = torch.randint(1, M + 1, (B, 1))
    rank = torch.rand(B, M).argsort(1).argsort(1)
    routes = (rank < k).to(torch.get_default_dtype())
    return [routes[:, l].reshape(B, 1, 1) for l in range(M)]


class Workload:
    def __init__(self, name, vocab):
        self.cfg = read(CONFIGS[name])
        run = read(self.cfg["target"]["run_config"])
        mc = dict(run["model"])
        mc.setdefault("vocab", vocab)
        data = run["data"]
        self.S = data["seq_len"] if data["type"] == "text" else 2 * data["half_len"] - 1
        self.B, self.V = self.cfg["train"]["batch_size"], mc["vocab"]
        self.layers = self.cfg["target"]["layers"]
        self.C = self.cfg["C"]
        ci = self.cfg["ci_fn"]
        w = target_weights(mc)
        self.dec = vs.Decomposition(mc, w, self.layers, init_params(self.layers, {l: w[l + ".weight"] for l in
                                    self.layers}, self.C, ci), ci["n_heads"], ci.get("rope", True),
                                    self.cfg.get("leaky_alpha", 0.01))
        tc = self.cfg["train"]
        self.step_index = tc["steps"] // 2  # training fraction 0.5, as the pd bench
        self.opt = torch.optim.Adam(list(self.dec.P.values()), lr=tc["lr"])
        term = next(t for t in self.cfg["losses"] if t["name"] == "persistent_pgd_recon_subset")
        self.pgd_coeff = term["coeff"]
        n = term.get("pgd_sources", 1)
        s = [torch.rand(n, self.S, self.C) for _ in self.layers]
        sd = [torch.rand(n, self.S, 1) for _ in self.layers]
        leaves = [x for pair in zip(s, sd) for x in pair]
        self.src = vs.Sources(term, s, sd, [torch.zeros_like(x) for x in leaves],
                              [torch.zeros_like(x) for x in leaves], 0)

    def step(self):
        B, S, M = self.B, self.S, len(self.layers)
        ids = torch.randint(0, self.V, (B, S))
        draws = {"stochastic": {"r": [torch.rand(B, S, self.C) for _ in range(M)],
                                "r_delta": [torch.rand(B, S, 1) for _ in range(M)],
                                "routes": uniform_k_routes(B, M)},
                 "pgd_routes": uniform_k_routes(B, M)}
        self.opt.zero_grad(set_to_none=False)
        total, _, (_, leaves, lr) = vs.step_losses(self.dec, self.cfg, ids, draws, self.src, self.step_index)
        total.backward()  # one backward: the sources' .grad is coeff dD/ds
        self.opt.step()
        self.src.ascend([x.grad / self.pgd_coeff for x in leaves], lr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=sorted(CONFIGS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--vocab", type=int, default=43)
    a = ap.parse_args()
    baseline = max_rss_kb()
    best = None
    for t in [int(s) for s in a.threads.split(",")]:
        torch.set_num_threads(t)
        torch.manual_seed(0)
        wl = Workload(a.workload, a.vocab)
        for _ in range(2):  # warm-up
            wl.step()
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < a.seconds:
            wl.step()
            n += 1
        sps = n / (time.perf_counter() - t0)
        rss = max_rss_kb()
        print(json.dumps({"bench": a.workload, "impl": "pytorch_eager", "torch": torch.__version__, "threads": t,
                          "steps_per_s": round(sps, 3), "ms_per_step": round(1e3 / sps, 3), "steps": n,
                          "batch": wl.B, "seq_len": wl.S, "vocab": wl.V, "C": wl.C, "max_rss_kb": rss,
                          "peak_rss_mb": round(rss / 1024, 1), "baseline_rss_kb": baseline}), flush=True)
        if best is None or sps > best[1]:
            best = (t, sps)
    rss = max_rss_kb()
    print(json.dumps({"bench": a.workload, "impl": "pytorch_eager", "best_threads": best[0],
                      "steps_per_s": round(best[1], 3), "max_rss_kb": rss, "peak_rss_mb": round(rss / 1024, 1),
                      "baseline_rss_kb": baseline}))


if __name__ == "__main__":
    main()
