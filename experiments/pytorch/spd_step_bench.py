#!/usr/bin/env python3
"""Plain PyTorch (eager) reference of one SPD training step, for comparing with `pd bench`.

The step is the one of METHODS 3.6 for the toy targets: one cached target pass recording the
decomposed layers' inputs, per-component scalar CI MLPs 1 -> 16 -> 1 (GELU) on h = x V,
lower/upper leaky hard sigmoids, importance minimality, stochastic reconstruction with all
layers masked and layerwise reconstruction (delta component on, continuous masks), then one
Adam step over the subcomponents and the CI functions. Target weights are random (the cost
of a step does not depend on them).

Workloads (same names as `pd bench`):
  spd_tms_5-2     TMS 5-2, C 20, batch 4096, layers linear1 and linear2 (tied: V2 = U1^T, U2 = V1^T)
  spd_tms_40-10   TMS 40-10, C 200, batch 4096
  spd_resid_mlp1  residual MLP 100 features, d_embed 1000, d_mlp 50, C 100, batch 2048

Usage: python3 experiments/pytorch/spd_step_bench.py spd_tms_5-2 [--threads 1,2] [--seconds 3]
Prints one JSON line per thread setting and a final line with the best steps_per_s.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


class LowerLeaky(torch.autograd.Function):
    """forward clamp(z, 0, 1); backward g on 0 < z <= 1, 0 above 1, alpha*g below 0 if g < 0."""

    @staticmethod
    def forward(ctx, z, alpha):
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return z.clamp(0, 1)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        inside = (z > 0) & (z <= 1)
        below = (z <= 0) & (g < 0)
        return torch.where(inside, g, torch.where(below, ctx.alpha * g, torch.zeros_like(g))), None


def upper_leaky(z, alpha=0.01):
    return torch.where(z > 1, 1 + alpha * (z - 1), z.clamp(min=0))


class Layer:
    def __init__(self, W, C, tied_to=None):
        self.W = W  # [d_out, d_in]
        d_out, d_in = W.shape
        self.tied_to = tied_to
        if tied_to is None:
            self.V = (torch.randn(d_in, C) / math.sqrt(d_in)).requires_grad_()
            self.U = (torch.randn(C, d_out) / math.sqrt(C)).requires_grad_()
        H = 16
        self.W1 = (torch.randn(C, H) * math.sqrt(2.0)).requires_grad_()
        self.b1 = torch.zeros(C, H, requires_grad=True)
        self.W2 = (torch.randn(C, H) / math.sqrt(H)).requires_grad_()
        self.b2 = torch.zeros(C, requires_grad=True)

    def VU(self):
        if self.tied_to is not None:
            return self.tied_to.U.t(), self.tied_to.V.t()
        return self.V, self.U

    def ci(self, x):
        V, _ = self.VU()
        h = x @ V  # [B, C]
        a = F.gelu(h.unsqueeze(-1) * self.W1 + self.b1)  # [B, C, H]
        return (a * self.W2).sum(-1) + self.b2

    def masked(self, x, bias, m, md):
        V, U = self.VU()
        h = x @ V
        out = (h * (m - md)) @ U + md * (x @ self.W.t())
        return out if bias is None else out + bias

    def params(self):
        p = [self.W1, self.b1, self.W2, self.b2]
        return p if self.tied_to is not None else [self.V, self.U] + p


def build(workload):
    torch.manual_seed(0)
    if workload.startswith("spd_tms"):
        nf, nh = (5, 2) if workload == "spd_tms_5-2" else (40, 10)
        C = 20 if nf == 5 else 200
        W = torch.randn(nh, nf) / math.sqrt(nf)
        b = torch.zeros(nf)
        l1 = Layer(W, C)
        l2 = Layer(W.t().contiguous(), C, tied_to=l1)
        layers = {"linear1": l1, "linear2": l2}

        def forward(x, repl):
            h = repl("linear1", x, None)
            return F.relu(repl("linear2", h, b))

        def sample(B):
            x = torch.rand(B, nf)
            return x * (torch.rand(B, nf) < 0.05)

        return layers, forward, sample, 4096, 3e-3, 1.0
    nf, de, dm, C = 100, 1000, 50, 100
    WE = F.normalize(torch.randn(nf, de), dim=1)
    Win = torch.randn(dm, de) / math.sqrt(de)
    Wout = torch.randn(de, dm) / math.sqrt(dm)
    layers = {"layers.0.mlp_in": Layer(Win, C), "layers.0.mlp_out": Layer(Wout, C)}

    def forward(x, repl):
        r = x @ WE
        a = F.relu(repl("layers.0.mlp_in", r, None))
        r = r + repl("layers.0.mlp_out", a, None)
        return r @ WE.t()

    def sample(B):
        x = torch.rand(B, nf) * 2 - 1
        return x * (torch.rand(B, nf) < 0.01)

    return layers, forward, sample, 2048, 1e-5, 2.0


def make_step(workload):
    layers, forward, sample, B, imp_coeff, p = build(workload)
    params = [q for l in layers.values() for q in l.params()]
    opt = torch.optim.Adam(params, lr=1e-3)
    names = list(layers)

    def step():
        x = sample(B)
        inputs = {}
        with torch.no_grad():

            def record(name, inp, bias):
                inputs[name] = inp
                y = inp @ layers[name].W.t()
                return y if bias is None else y + bias

            target = forward(x, record)
        z = {n: layers[n].ci(inputs[n]) for n in names}
        g = {n: LowerLeaky.apply(z[n], 0.01) for n in names}
        imp = sum(((upper_leaky(z[n]) + 1e-12) ** p).sum(0).div(B).sum() for n in names)

        def masks_for(active):
            def repl(name, inp, bias):
                if name not in active:
                    y = inp @ layers[name].W.t()
                    return y if bias is None else y + bias
                gg = g[name]
                m = gg + (1 - gg) * torch.rand_like(gg)
                md = torch.rand(gg.shape[0], 1)
                return layers[name].masked(inp, bias, m, md)

            return repl

        stoch = F.mse_loss(forward(x, masks_for(set(names))), target)
        lw = sum(F.mse_loss(forward(x, masks_for({n})), target) for n in names) / len(names)
        loss = imp_coeff * imp + stoch + lw
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["spd_tms_5-2", "spd_tms_40-10", "spd_resid_mlp1"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    best = None
    for t in [int(s) for s in a.threads.split(",")]:
        torch.set_num_threads(t)
        step = make_step(a.workload)
        for _ in range(3):  # warm-up
            step()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            step()
            n += 1
        sps = n / (time.perf_counter() - t0)
        print(json.dumps({"bench": a.workload, "impl": "pytorch_eager", "torch": torch.__version__, "threads": t,
                          "steps_per_s": round(sps, 3)}))
        if best is None or sps > best[1]:
            best = (t, sps)
    print(json.dumps({"bench": a.workload, "impl": "pytorch_eager", "best_threads": best[0],
                      "steps_per_s": round(best[1], 3)}))


if __name__ == "__main__":
    main()
