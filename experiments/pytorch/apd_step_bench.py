#!/usr/bin/env python3
"""Plain PyTorch (eager, float32) reference of one APD training step, for comparing with `pd bench`.

The step is the one of METHODS 2 as decomp/apd.cpp runs it:
  1. sample a batch x [B, n_f];
  2. target forward, recording each decomposed layer's input a_l; each layer output gets a
     zero leaf z_l added (h_l = a_l W_l^T + b_l + z_l), so d y / d z_l = d y / d h_l;
  3. gradient attributions [B, C]: one backward of each output y_o (o < O) over the retained
     graph gives g_{l,o} [B, d_out_l]; with the component outputs a_l P_{c,l} [B, C, d_out_l]
       attr[b, c] = sum_o ( sum_l g_{l,o}[b] . (a_l[b] A_{c,l} B_{c,l}) )^2   (no gradient);
  4. batch top-k mask s [B, C]: the K = floor(topk * B) largest attributions over all of [B, C];
  5. top-k forward: every decomposed layer computes out_l = sum_c s_{b,c} (x A_{c,l}) B_{c,l} + b_l;
  6. losses (decomp/losses/*.cpp), N = decomposed parameter count (a tied layer counts again):
       faithfulness  sum_l ||W_l^T - sum_c A_{c,l} B_{c,l}||_F^2 / N
       minimality    MSE(y_topk, y_target)
       act_recon     MSE(post-ReLU MLP activations of the top-k pass, of the target pass)
       simplicity    sum_{b,l,c,k} (s_{b,c} ||A_{c,l,:,k}||^2 ||B_{c,l,k,:}||^2 + 1e-16)^{p/2} / (N B)
  7. backward and one Adam step (betas 0.9, 0.999, eps 1e-8). With unit_norm_A (residual MLP)
     the A columns are normalised before the step's forward and each A column's gradient
     loses its component along the column before the Adam step.
Factors are stored as in the C++ ComponentModel: V_l = [A_{1,l} | ... | A_{C,l}] [d_in, C m],
U_l = [B_{1,l}; ...; B_{C,l}] [C m, d_out]; TMS's linear2 is tied: V_2 = U_1^T, U_2 = V_1^T.
Target weights are random (the cost of a step does not depend on them).

Workloads (same names as `pd bench`):
  apd_tms_5-2     TMS 5-2, C 5, m 3, batch 2048, topk 0.211, min 1, simp 0.7 (p 1), lr 3e-2
  apd_tms_40-10   TMS 40-10, C 50, m 11, batch 2048, topk 1, min 10, simp 20 (p 0.9), lr 1e-3
  apd_resid_mlp1  residual MLP 100 features, d_embed 1000, d_mlp 50, C 130, m 50, batch 256,
                  topk 1.28, min 1, act_recon 1, simp 10 (p 0.9), unit-norm A, lr 1e-3

Usage: python3 experiments/pytorch/apd_step_bench.py apd_tms_5-2 [--threads 1,2] [--seconds 3]
Prints one JSON line per thread setting and a final line with the best steps_per_s. Memory:
max_rss_kb is getrusage(RUSAGE_SELF).ru_maxrss in KiB, the quantity `pd bench` reports under
the same key (peak_rss_mb = max_rss_kb / 1024); it is the peak of the whole process, so it
includes the PyTorch libraries: baseline_rss_kb is the same figure just before the workload
was built (after importing torch).
"""
import argparse
import json
import math
import resource
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def max_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB


class Layer:
    """One decomposed linear layer: target weight W [d_out, d_in], frozen bias, factors V, U."""

    def __init__(self, name, W, bias, C, m, init_scale, tied_to=None):
        self.name, self.W, self.bias, self.C, self.m = name, W, bias, C, m
        self.d_out, self.d_in = W.shape
        self.tied_to = tied_to
        if tied_to is None:  # as the C++ ComponentModel: V ~ N(0, s^2/d_in), U ~ N(0, s^2/(C m))
            self.V = (torch.randn(self.d_in, C * m) * (init_scale / math.sqrt(self.d_in))).requires_grad_()
            self.U = (torch.randn(C * m, self.d_out) * (init_scale / math.sqrt(C * m))).requires_grad_()

    def factors(self):
        """(V [d_in, C m], U [C m, d_out]); a tied layer transposes its source's."""
        if self.tied_to is not None:
            return self.tied_to.U.t(), self.tied_to.V.t()
        return self.V, self.U

    def with_bias(self, out):
        return out if self.bias is None else out + self.bias

    def target(self, x):
        return self.with_bias(x @ self.W.t())

    def topk(self, x, s_cols):
        V, U = self.factors()
        return self.with_bias(((x @ V) * s_cols) @ U)

    def component_outputs(self, a):
        """a [B, d_in] -> a P_{c,l} for every c: [B, C, d_out]."""
        V, U = self.factors()
        h = (a @ V).reshape(a.shape[0], self.C, self.m).transpose(0, 1)  # [C, B, m]
        return torch.bmm(h, U.reshape(self.C, self.m, self.d_out)).transpose(0, 1)

    def params(self):
        return [] if self.tied_to is not None else [self.V, self.U]


def build_tms(small):
    nf, nh = (5, 2) if small else (40, 10)
    C, m = (5, 3) if small else (50, 11)
    W = torch.randn(nh, nf) * math.sqrt(2.0 / (nf + nh))  # xavier normal, as models/toy_models.cpp
    b = torch.zeros(nf)
    l1 = Layer("linear1", W, None, C, m, 1.0)
    l2 = Layer("linear2", W.t().contiguous(), b, C, m, 1.0, tied_to=l1)

    def forward(x, apply):
        return F.relu(apply(l2, apply(l1, x)))

    def sample(B):
        return torch.rand(B, nf) * (torch.rand(B, nf) < 0.05)

    coeffs = {"faithfulness": 1.0, "minimality": 1.0 if small else 10.0, "simplicity": 0.7 if small else 20.0}
    return SimpleNamespace(layers=[l1, l2], forward=forward, sample=sample, C=C, m=m, B=2048,
                           topk=0.211 if small else 1.0, coeffs=coeffs, p=1.0 if small else 0.9,
                           lr=3e-2 if small else 1e-3, unit_norm_A=False, act_recon=[])


def build_resid_mlp1():
    nf, de, dm, C, m = 100, 1000, 50, 130, 50
    WE = F.normalize(torch.randn(nf, de), dim=1)  # unit-norm rows; W_U = W_E^T
    Win = (torch.rand(dm, de) * 2 - 1) / math.sqrt(de)
    Wout = (torch.rand(de, dm) * 2 - 1) / math.sqrt(dm)
    l_in = Layer("layers.0.mlp_in", Win, None, C, m, 2.0)
    l_out = Layer("layers.0.mlp_out", Wout, None, C, m, 2.0)

    def forward(x, apply):
        r = x @ WE
        r = r + apply(l_out, F.relu(apply(l_in, r)))
        return r @ WE.t()

    def sample(B):
        return (torch.rand(B, nf) * 2 - 1) * (torch.rand(B, nf) < 0.01)

    coeffs = {"faithfulness": 1.0, "minimality": 1.0, "act_recon": 1.0, "simplicity": 10.0}
    return SimpleNamespace(layers=[l_in, l_out], forward=forward, sample=sample, C=C, m=m, B=256, topk=1.28,
                           coeffs=coeffs, p=0.9, lr=1e-3, unit_norm_A=True, act_recon=["layers.0.mlp_out"])


def build(workload):
    torch.manual_seed(0)
    if workload == "apd_resid_mlp1":
        return build_resid_mlp1()
    return build_tms(workload == "apd_tms_5-2")


# ---- one step --------------------------------------------------------------------------------
def target_pass(wl, x):
    """Target forward with zero leaves z_l on the layer outputs: (y, {name: z_l}, {name: a_l})."""
    zs, inputs = {}, {}

    def apply(layer, a):
        inputs[layer.name] = a.detach()
        h = layer.target(a)
        zs[layer.name] = torch.zeros_like(h, requires_grad=True)
        return h + zs[layer.name]

    return wl.forward(x, apply), zs, inputs


def gradient_attributions(wl, y, zs, inputs):
    """attr [B, C] = sum_o (sum_l g_{l,o} . (a_l P_{c,l}))^2, one backward per output o."""
    B, O = y.shape
    names = [l.name for l in wl.layers]
    G = {l.name: torch.empty(B, O, l.d_out) for l in wl.layers}  # g_{l,o} for every o
    onehot = torch.zeros_like(y)
    for o in range(O):
        onehot.zero_()
        onehot[:, o] = 1
        gs = torch.autograd.grad(y, [zs[n] for n in names], onehot, retain_graph=o + 1 < O)
        for n, g in zip(names, gs):
            G[n][:, o] = g
    with torch.no_grad():
        dots = sum(torch.bmm(l.component_outputs(inputs[l.name]), G[l.name].transpose(1, 2)) for l in wl.layers)
        return dots.square().sum(2)  # [B, C]


def batch_topk_mask(attr, topk):
    """1 at the K = floor(topk B) largest entries of the whole [B, C] (all when K >= B C)."""
    B, C = attr.shape
    K = min(math.floor(topk * B), B * C)
    mask = torch.zeros(B * C)
    mask[torch.topk(attr.flatten(), K).indices] = 1
    return mask.view(B, C)


def topk_forward(wl, x, s_cols):
    inputs = {}

    def apply(layer, a):
        inputs[layer.name] = a
        return layer.topk(a, s_cols)

    return wl.forward(x, apply), inputs


def losses(wl, y_topk, y_target, inputs_topk, inputs_target, s_cols):
    N = sum(l.W.numel() for l in wl.layers)  # the tied layer counts again
    faith = 0.0
    simp = 0.0
    for l in wl.layers:
        V, U = l.factors()
        faith = faith + (V @ U - l.W.t()).square().sum()
        norms = V.square().sum(0) * U.square().sum(1)  # [C m]
        simp = simp + (s_cols * norms + 1e-16).pow(wl.p / 2).sum()
    terms = {"faithfulness": faith / N, "minimality": F.mse_loss(y_topk, y_target),
             "simplicity": simp / (N * s_cols.shape[0])}
    if wl.act_recon:
        terms["act_recon"] = sum(F.mse_loss(inputs_topk[n], inputs_target[n]) for n in wl.act_recon) / len(wl.act_recon)
    return sum(wl.coeffs[k] * v for k, v in terms.items())


def normalise_A(wl):
    """A columns (V columns) to unit norm; a zero column stays zero."""
    with torch.no_grad():
        for l in wl.layers:
            if l.tied_to is None:
                n = l.V.norm(dim=0)
                l.V.div_(torch.where(n > 0, n, torch.ones_like(n)))


def remove_parallel_grad(wl):
    """g_j -= (g_j . a_j / |a_j|^2) a_j for every A column a_j."""
    with torch.no_grad():
        for l in wl.layers:
            if l.tied_to is None and l.V.grad is not None:
                n2 = l.V.square().sum(0)
                f = (l.V.grad * l.V).sum(0) / torch.where(n2 > 0, n2, torch.ones_like(n2))
                l.V.grad.sub_(f * l.V)


def make_step(workload):
    wl = build(workload)
    opt = torch.optim.Adam([q for l in wl.layers for q in l.params()], lr=wl.lr, betas=(0.9, 0.999), eps=1e-8)

    def step():
        if wl.unit_norm_A:
            normalise_A(wl)
        x = wl.sample(wl.B)
        y, zs, inputs = target_pass(wl, x)
        attr = gradient_attributions(wl, y, zs, inputs)
        s_cols = batch_topk_mask(attr, wl.topk).repeat_interleave(wl.m, dim=1)  # [B, C m]
        y_topk, inputs_topk = topk_forward(wl, x, s_cols)
        loss = losses(wl, y_topk, y.detach(), inputs_topk, inputs, s_cols)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if wl.unit_norm_A:
            remove_parallel_grad(wl)
        opt.step()
        return loss

    return step, wl


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["apd_tms_5-2", "apd_tms_40-10", "apd_resid_mlp1"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    baseline = max_rss_kb()
    best = None
    for t in [int(s) for s in a.threads.split(",")]:
        torch.set_num_threads(t)
        step, wl = make_step(a.workload)
        for _ in range(3):  # warm-up
            loss = step()
        if not math.isfinite(loss.item()):
            raise SystemExit(f"apd_step_bench: non-finite loss {loss.item()}")
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            step()
            n += 1
        sps = n / (time.perf_counter() - t0)
        rss = max_rss_kb()
        print(json.dumps({"bench": a.workload, "impl": "pytorch_eager", "torch": torch.__version__, "threads": t,
                          "steps_per_s": round(sps, 3), "ms_per_step": round(1e3 / sps, 3), "steps": n,
                          "batch": wl.B, "C": wl.C, "m": wl.m, "max_rss_kb": rss, "peak_rss_mb": round(rss / 1024, 1),
                          "baseline_rss_kb": baseline}), flush=True)
        if best is None or sps > best[1]:
            best = (t, sps)
    rss = max_rss_kb()
    print(json.dumps({"bench": a.workload, "impl": "pytorch_eager", "best_threads": best[0],
                      "steps_per_s": round(best[1], 3), "max_rss_kb": rss, "peak_rss_mb": round(rss / 1024, 1),
                      "baseline_rss_kb": baseline}))


if __name__ == "__main__":
    main()
