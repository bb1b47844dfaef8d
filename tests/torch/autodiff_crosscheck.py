#!/usr/bin/python3
"""PyTorch reference for tests/test_torch_crosscheck.cpp.

usage: autodiff_crosscheck.py INPUT.json OUTPUT.json

INPUT holds, per case, float64 tensors {"shape": [...], "data": [...]} (JSON numbers are
written with 17 significant digits, so they round-trip exactly), integer id lists and
scalar settings. For every case this script builds the same graph in float64 PyTorch,
computes the scalar loss and d loss / d every listed parameter, and writes
{"case": {"loss": x, "grads": {"name": {"shape": [...], "data": [...]}}}} to OUTPUT.
Exit code 77 when torch is not importable (the C++ test then skips).
"""
import json
import math
import os
import sys

try:
    import torch
except ImportError:
    print("autodiff_crosscheck.py: PyTorch is not installed", file=sys.stderr)
    sys.exit(77)

torch.set_default_dtype(torch.float64)


def tensor(spec, requires_grad):
    t = torch.tensor(spec["data"], dtype=torch.float64).reshape(spec["shape"])
    return t.requires_grad_(requires_grad)


# ---- SPD's lower-leaky hard sigmoid (METHODS.md 3.2): forward clamp(z, 0, 1); backward
# g on 0 < z <= 1, 0 for z > 1, and for z <= 0 alpha*g only where g < 0, else 0.
class LowerLeakyHardSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, alpha):
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return z.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        inside = (z > 0) & (z <= 1)
        below = (z <= 0) & (g < 0)
        dz = torch.where(inside, g, torch.zeros_like(g)) + torch.where(below, ctx.alpha * g, torch.zeros_like(g))
        return dz, None


def upper_leaky_hard_sigmoid(z, alpha):
    # clamp(z, 0, 1) for z <= 1, 1 + alpha (z - 1) above; ordinary derivative
    return torch.where(z > 1, 1 + alpha * (z - 1), z.clamp(0.0, 1.0))


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, base):
    # split-half rotary embedding on [B, H, T, Dh]; angle of pair i at position t: t base^(-2i/Dh)
    T, Dh = x.shape[-2], x.shape[-1]
    half = Dh // 2
    inv_freq = torch.tensor([base ** (-2.0 * i / Dh) for i in range(half)], dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def causal_attention(q, k, v):
    T, Dh = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    p = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
    return p @ v


def case_mlp(c):
    ps = {n: tensor(c["tensors"][n], n in c["params"]) for n in c["tensors"]}
    targets = torch.tensor(c["ints"]["targets"], dtype=torch.long)
    h = torch.relu(ps["x"] @ ps["W1"].T + ps["b1"])
    h = torch.nn.functional.gelu(h @ ps["W2"].T + ps["b2"], approximate="tanh")
    logits = h @ ps["W3"].T + ps["b3"]
    loss = torch.nn.functional.cross_entropy(logits, targets)
    return loss, ps


def case_attention(c):
    ps = {n: tensor(c["tensors"][n], n in c["params"]) for n in c["tensors"]}
    s = c["scalars"]
    B, T, H = int(s["B"]), int(s["T"]), int(s["H"])
    ids = torch.tensor(c["ints"]["ids"], dtype=torch.long).reshape(B, T)
    nxt = torch.tensor(c["ints"]["next"], dtype=torch.long)
    E = ps["E"]
    V, D = E.shape
    Dh = D // H
    x = E[ids]                                                     # [B, T, D]
    h = rms_norm(x, ps["g1"], s["eps"])

    def heads(W):
        return (h @ W.T).reshape(B, T, H, Dh).permute(0, 2, 1, 3)  # [B, H, T, Dh]

    q, k, v = rope(heads(ps["Wq"]), s["base"]), rope(heads(ps["Wk"]), s["base"]), heads(ps["Wv"])
    a = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
    y = x + a @ ps["Wo"].T
    m = torch.nn.functional.gelu(rms_norm(y, ps["g2"], s["eps"]) @ ps["Wup"].T)  # erf GELU
    y = y + m @ ps["Wdown"].T
    logits = rms_norm(y, ps["g3"], s["eps"]) @ E.T                 # tied unembedding, [B, T, V]
    ce = torch.nn.functional.cross_entropy(logits.reshape(B * T, V), nxt)
    target = ps["target_logits"]
    p = torch.softmax(target, -1)
    kl = (p * (torch.log_softmax(target, -1) - torch.log_softmax(logits, -1))).sum(-1).mean()
    return ce + 0.5 * kl, ps


def case_leaky(c):
    ps = {n: tensor(c["tensors"][n], n in c["params"]) for n in c["tensors"]}
    alpha = c["scalars"]["alpha"]
    x, Vm, U, W = ps["x"], ps["V"], ps["U"], ps["W"]
    h = x @ Vm                                                     # [B, C] component activations
    z = h * ps["s"] + ps["t"]                                      # per-component affine CI
    g_low = LowerLeakyHardSigmoid.apply(z, alpha)
    g_up = upper_leaky_hard_sigmoid(z, alpha)
    mask = g_low + (1 - g_low) * ps["r"]
    out = (h * mask) @ U
    recon = ((out - x @ W.T) ** 2).mean()
    # a second masked pass reusing g_low (a diamond), plus importance minimality on g_up
    out2 = (h * g_low) @ U
    recon2 = ((out2 - x @ W.T) ** 2).mean()
    return recon + 0.5 * recon2 + 0.1 * g_up.sum() / x.shape[0], ps


CASES = {"mlp_cross_entropy": case_mlp, "attention_block": case_attention, "leaky_mask_chain": case_leaky}


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    results = {}
    for name, c in spec.items():
        loss, ps = CASES[name](c)
        loss.backward()
        grads = {}
        for n in c["params"]:
            g = ps[n].grad
            if g is None:
                g = torch.zeros_like(ps[n])
            grads[n] = {"shape": list(g.shape), "data": g.reshape(-1).tolist()}
        results[name] = {"loss": loss.item(), "grads": grads}
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
