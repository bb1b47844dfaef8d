#!/usr/bin/env python3
"""PyTorch reference of one full VPD training step (METHODS 4) on a token target.

Called by tests/test_vpd_torch.cpp as `vpd_step.py IN.json OUT.json` (float64); imported by
experiments/pytorch/vpd_step_bench.py (float32, random draws) for the speed comparison.
Exit code 77 when torch is missing.

The step, written from METHODS 3-4 and the engine's documented semantics:
  target pass     logits_t = f(ids), each decomposed layer's input x_l recorded (constant)
  CI              z = global bidirectional transformer(x_1..x_L) (decomp/ci_transformer.hpp),
                  g = lower_leaky(z) (masks), u = upper_leaky(z) (importance minimality)
  masked layer    out = (h * m) U + m_delta (x W^T - h U),  h = x V  (computed as
                  (h (m - m_delta)) U + m_delta x W^T);  routed per example:
                  route * out + (1 - route) x W^T
  D               KL(p_target || q), mean over positions
  terms           faithfulness = sum_l ||W_l^T - V_l U_l||^2 / sum_l numel(W_l)
                  importance_minimality: per layer S_c = sum_{b,s} (u + 1e-12)^p, f_c = S_c / N
                    (N = batch x positions), sum_c f_c + beta f_c log2(1 + S_c); p annealed
                  stochastic_recon_subset: D under m = g + (1 - g) r, m_delta = r_delta, routes
                  persistent_pgd_recon_subset: sources s [n, S, C], s_delta [n, S, 1], example b
                    reads row b mod n; `inner` Adam ascent steps on D with g, V, U held
                    constant; then D at the sources (a term of the total)
  total           sum coeff * term; backward; the component group clipped to its norm
                  (clip_grad_norm); AdamW step at the scheduled lr
  after step      one more Adam ascent step on the sources with dD/ds of the training loss's
                  persistent term (the term's own gradient, as the inner steps use), clamp [0, 1]
Source Adam: lr_t = lr min(1, (step + 1) / max(1, warmup T)), bias-corrected moments, ascent.
"""
import json
import math
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(77)


# ---- hard sigmoids (METHODS 3.2) --------------------------------------------------------------
class LowerLeaky(torch.autograd.Function):
    """Forward clamp(z, 0, 1). Backward: g on 0 < z <= 1, 0 for z > 1, and for z <= 0 alpha g
    when g < 0 (only a push back up reaches a dead component), else 0."""

    @staticmethod
    def forward(ctx, z, alpha):
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return z.clamp(0, 1)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        zero = torch.zeros_like(g)
        above = torch.where(z <= 1, g, zero)
        below = torch.where(g < 0, ctx.alpha * g, zero)
        return torch.where(z > 0, above, below), None


def upper_leaky(z, alpha):
    return torch.where(z > 1, 1 + alpha * (z - 1), z.clamp(min=0))


# ---- transformer pieces -------------------------------------------------------------------------
def rms(x, weight, eps):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def rope(x, base=10000.0):
    """x [B, H, S, Dh]: pairs (i, i + Dh/2) of position s rotated by s base^(-2i/Dh)."""
    S, Dh = x.shape[-2], x.shape[-1]
    half = Dh // 2
    inv = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / Dh)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * inv[None, :]
    c, s = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1)


def heads(x, H):
    B, S, D = x.shape
    return x.reshape(B, S, H, D // H).permute(0, 2, 1, 3)


def unheads(x):
    B, H, S, Dh = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, S, H * Dh)


def attend(q, k, v, causal):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        S = q.shape[-2]
        s = s.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


def sinusoidal(S, D, dtype):
    t = torch.arange(S, dtype=torch.float64)[:, None]
    i = torch.arange(D)
    freq = 10000.0 ** (-(i - i % 2).to(torch.float64) / D)
    ang = t * freq[None, :]
    return torch.where(i % 2 == 0, ang.sin(), ang.cos()).to(dtype)


def tiny_lm_forward(w, mc, ids, linear):
    """models/transformers.hpp TinyLM; linear(name, x, W) computes (or replaces) x W^T."""
    H, eps, base = mc["n_heads"], mc.get("norm_eps", 1e-6), mc.get("rope_base", 10000.0)
    x = w["embed.weight"][ids]
    for i in range(mc["n_layers"]):
        p = "blocks.%d." % i
        n = rms(x, w[p + "attn_norm.weight"], eps)
        q = rope(heads(linear(p + "attn.q_proj", n, w[p + "attn.q_proj.weight"]), H), base)
        k = rope(heads(linear(p + "attn.k_proj", n, w[p + "attn.k_proj.weight"]), H), base)
        v = heads(linear(p + "attn.v_proj", n, w[p + "attn.v_proj.weight"]), H)
        x = x + linear(p + "attn.o_proj", unheads(attend(q, k, v, True)), w[p + "attn.o_proj.weight"])
        m = rms(x, w[p + "mlp_norm.weight"], eps)
        x = x + linear(p + "mlp.down_proj", gelu(linear(p + "mlp.c_fc", m, w[p + "mlp.c_fc.weight"])),
                       w[p + "mlp.down_proj.weight"])
    return linear("lm_head", rms(x, w["norm.weight"], eps), w["embed.weight"])


def induction_forward(w, mc, ids, linear):
    """models/transformers.hpp InductionTransformer (attention only): positions enter q and k."""
    H = mc["n_heads"]
    x = w["embed.weight"][ids]
    pos = sinusoidal(ids.shape[1], x.shape[-1], x.dtype)
    for i in range(mc["n_layers"]):
        p = "blocks.%d." % i
        xp = x + pos
        q = heads(linear(p + "attn.q_proj", xp, w[p + "attn.q_proj.weight"]), H)
        k = heads(linear(p + "attn.k_proj", xp, w[p + "attn.k_proj.weight"]), H)
        v = heads(linear(p + "attn.v_proj", x, w[p + "attn.v_proj.weight"]), H)
        x = x + linear(p + "attn.o_proj", unheads(attend(q, k, v, True)), w[p + "attn.o_proj.weight"])
    return linear("unembed", x, w["unembed.weight"])


FORWARDS = {"tiny_lm": tiny_lm_forward, "induction": induction_forward}


def ci_transformer(P, layers, xs, H, use_rope):
    """decomp/ci_transformer.hpp: z_l [B, S, C] for every layer from the layer inputs xs."""
    a = sum(rms(x, None, 1e-6) @ P["ci_global.in_w." + l] for l, x in zip(layers, xs)) + P["ci_global.in_b"]
    k = 0
    while "ci_global.blocks.%d.wq" % k in P:
        b = lambda n: P["ci_global.blocks.%d.%s" % (k, n)]
        n = rms(a, b("attn_norm"), 1e-6)
        q, kk, v = heads(n @ b("wq"), H), heads(n @ b("wk"), H), heads(n @ b("wv"), H)
        if use_rope:
            q, kk = rope(q), rope(kk)
        a = a + unheads(attend(q, kk, v, False)) @ b("wo")
        m = rms(a, b("mlp_norm"), 1e-6)
        a = a + (gelu(m @ b("w1") + b("b1")) @ b("w2") + b("b2"))
        k += 1
    h = rms(a, P["ci_global.final_norm"], 1e-6)
    return [h @ P["ci_global.out_w." + l] + P["ci_global.out_b." + l] for l in layers]


# ---- the decomposition ----------------------------------------------------------------------------
class Decomposition:
    """Target weights w (by model parameter name), decomposed layer names, parameters P (by the
    engine's names: '<layer>.V' [d_in, C], '<layer>.U' [C, d_out], 'ci_global.*')."""

    def __init__(self, mc, w, layers, P, ci_heads, ci_rope, alpha):
        self.mc, self.w, self.layers, self.P = mc, w, layers, P
        self.forward = FORWARDS[mc["type"]]
        self.ci_heads, self.ci_rope, self.alpha = ci_heads, ci_rope, alpha
        self.W = {l: w[l + ".weight"] for l in layers}

    def target_pass(self, ids):
        xs = {}

        def linear(name, x, W):
            if name in self.W:
                xs[name] = x
            return x @ W.t()

        with torch.no_grad():
            out = self.forward(self.w, self.mc, ids, linear)
        return out, [xs[l] for l in self.layers]

    def forward_masked(self, ids, masks, constant=False):
        """masks: per layer (m, m_delta, route) or None; constant: V and U detached (inner steps)."""
        idx = {l: i for i, l in enumerate(self.layers)}

        def linear(name, x, W):
            mk = masks[idx[name]] if name in idx else None
            if mk is None:
                return x @ W.t()
            m, md, route = mk
            V, U = self.P[name + ".V"], self.P[name + ".U"]
            if constant:
                V, U = V.detach(), U.detach()
            h = x @ V
            xw = x @ W.t()
            out = (h * (m - md)) @ U + md * xw  # = (h m) U + m_delta (x W^T - h U), one product fewer
            return out if route is None else route * out + (1 - route) * xw

        return self.forward(self.w, self.mc, ids, linear)

    def ci(self, xs):
        z = ci_transformer(self.P, self.layers, xs, self.ci_heads, self.ci_rope)
        return [LowerLeaky.apply(zl, self.alpha) for zl in z], [upper_leaky(zl, self.alpha) for zl in z]

    def faithfulness(self):
        num = sum(((self.P[l + ".V"] @ self.P[l + ".U"] - self.W[l].t()) ** 2).sum() for l in self.layers)
        return num / sum(self.W[l].numel() for l in self.layers)


def kl(target_logits, logits):
    logp = F.log_softmax(target_logits, -1)
    return (logp.exp() * (logp - F.log_softmax(logits, -1))).sum(-1).mean()


def importance_minimality(us, p, beta):
    total = 0
    for u in us:
        flat = u.reshape(-1, u.shape[-1])
        S = ((flat + 1e-12) ** p).sum(0)
        f = S / flat.shape[0]
        total = total + f.sum() + beta * (f * torch.log2(1 + S)).sum()
    return total


def p_at(t, frac):
    p0, p1 = t.get("p", 1.0), t.get("p_final", -1.0)
    a, b = t.get("anneal_start", 0.0), t.get("anneal_end", 1.0)
    if p1 < 0 or frac <= a:
        return p0
    if frac >= b:
        return p1
    return p0 + (p1 - p0) * (frac - a) / (b - a)


def lr_at(tc, step):
    """The training schedule (autodiff/optim.hpp LrSchedule)."""
    base, T = tc["lr"], tc["steps"]
    W = math.floor(tc.get("warmup_frac", 0.0) * T)
    if step < W:
        return base * (step + 1) / W
    t, TT, ff, kind = step - W, T - W, tc.get("final_lr_frac", 0.0), tc.get("schedule", "constant")
    if kind == "constant":
        return base
    if kind == "linear":
        return base * (ff + (1 - ff) * (1 - t / TT))
    return base * (ff + (1 - ff) * 0.5 * (1 + math.cos(math.pi * t / TT)))


class Sources:
    """Persistent PGD sources of one term with their Adam state (moments in s_l, s_delta_l order)."""

    def __init__(self, term, s, s_delta, m1, m2, t):
        self.s, self.s_delta, self.m1, self.m2, self.t = s, s_delta, m1, m2, t
        self.lr, self.warmup = term.get("pgd_lr", 0.01), term.get("pgd_warmup", 0.025)
        self.b1, self.b2, self.eps = term.get("pgd_beta1", 0.5), term.get("pgd_beta2", 0.99), term.get("pgd_eps", 1e-8)
        self.inner = term.get("pgd_inner_steps", 2)

    def leaves(self):
        out = []
        for a, b in zip(self.s, self.s_delta):
            out += [a, b]
        return out

    def lr_at(self, step, T):
        return self.lr * min(1.0, (step + 1.0) / max(1.0, self.warmup * T))

    @torch.no_grad()
    def ascend(self, grads, lr):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for x, m, v, g in zip(self.leaves(), self.m1, self.m2, grads):
            m.mul_(self.b1).add_((1 - self.b1) * g)
            v.mul_(self.b2).add_((1 - self.b2) * g * g)
            x.add_(lr * (m / c1) / ((v / c2).sqrt() + self.eps)).clamp_(0, 1)


def tile(src, B):
    """[n, ...] -> [B, ...], example b reading row b mod n."""
    return src[torch.arange(B) % src.shape[0]]


def source_masks(g, s, s_delta, routes):
    B = g[0].shape[0]
    return [(gl + (1 - gl) * tile(sl, B), tile(sd, B), r) for gl, sl, sd, r in zip(g, s, s_delta, routes)]


def step_losses(dec, cfg, ids, draws, src, step):
    """Everything of one training step up to the backward. Runs the sources' inner ascent
    (in place). Returns (total, {label: value tensor}, D at the sources, the source leaves)."""
    T = cfg["train"]["steps"]
    frac = step / T
    target_out, xs = dec.target_pass(ids)
    g, u = dec.ci(xs)
    total, terms, pgd = 0, {}, None
    for t in cfg["losses"]:
        name, coeff = t["name"], t.get("coeff", 1.0)
        if coeff == 0:
            continue
        if name == "faithfulness":
            v = dec.faithfulness()
        elif name == "importance_minimality":
            v = importance_minimality(u, p_at(t, frac), t.get("beta", 0.0))
        elif name == "stochastic_recon_subset":
            r = draws["stochastic"]
            masks = [(gl + (1 - gl) * rl, rd, ro) for gl, rl, rd, ro in zip(g, r["r"], r["r_delta"], r["routes"])]
            v = kl(target_out, dec.forward_masked(ids, masks))
        elif name == "persistent_pgd_recon_subset":
            lr = src.lr_at(step, T)
            g_const = [gl.detach() for gl in g]
            for _ in range(src.inner):
                leaves = [x.detach().requires_grad_() for x in src.leaves()]
                D = kl(target_out, dec.forward_masked(ids, source_masks(g_const, leaves[0::2], leaves[1::2],
                                                                        draws["pgd_routes"]), constant=True))
                src.ascend(torch.autograd.grad(D, leaves), lr)
            leaves = [x.detach().requires_grad_() for x in src.leaves()]
            v = kl(target_out, dec.forward_masked(ids, source_masks(g, leaves[0::2], leaves[1::2], draws["pgd_routes"])))
            pgd = (v, leaves, lr)
        else:
            raise ValueError("vpd_step.py: loss term '%s' is not implemented here" % name)
        terms[t.get("label", name)] = v
        total = total + coeff * v
    return total, terms, pgd


def group_norm(params):
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))


# ---- the cross-check (float64) --------------------------------------------------------------------
def tensor(j, dtype=torch.float64):
    return torch.tensor(j["data"], dtype=dtype).reshape(j["shape"])


def out_json(t):
    t = t.detach()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def cross_check(inp):
    torch.set_num_threads(1)
    cfg, step = inp["config"], inp["step"]
    tc = cfg["train"]
    w = {k: tensor(v) for k, v in inp["target"].items()}
    P = {k: tensor(v).requires_grad_() for k, v in inp["params"].items()}
    ci = cfg["ci_fn"]
    dec = Decomposition(inp["model_config"], w, inp["layers"], P, ci["n_heads"], ci.get("rope", True),
                        inp["leaky_alpha"])
    ids = tensor(inp["ids"], torch.int64)
    st = inp["stochastic"]
    draws = {"stochastic": {k: [tensor(x) for x in st[k]] for k in ("r", "r_delta", "routes")},
             "pgd_routes": [tensor(x) for x in inp["pgd_routes"]]}
    s = inp["sources"]
    pgd_term = next(t for t in cfg["losses"] if t["name"] == "persistent_pgd_recon_subset")
    src = Sources(pgd_term, [tensor(x) for x in s["s"]], [tensor(x) for x in s["s_delta"]],
                  [tensor(x) for x in s["m1"]], [tensor(x) for x in s["m2"]], int(s["t"]))

    total, terms, (D_pgd, leaves, src_lr) = step_losses(dec, cfg, ids, draws, src, step)
    # the persistent term's own gradient with respect to its sources (after_step applies it)
    src_grads = torch.autograd.grad(D_pgd, leaves, retain_graph=True)
    total.backward()
    comp = [P[n] for n in inp["component_params"]]
    cis = [P[n] for n in inp["ci_params"]]
    clip = tc.get("grad_clip", {})
    clip = clip.get("components", 0.0) if isinstance(clip, dict) else clip
    norm_ci = group_norm(cis)
    norm_comp = float(torch.nn.utils.clip_grad_norm_(comp, clip)) if clip > 0 else group_norm(comp)
    lr = lr_at(tc, step)
    opt = torch.optim.AdamW([{"params": comp}, {"params": cis}], lr=lr, betas=(tc.get("beta1", 0.9),
                            tc.get("beta2", 0.999)), eps=tc.get("eps", 1e-8), weight_decay=tc.get("weight_decay", 0.0))
    for name, p in P.items():
        a = inp["adam"][name]
        opt.state[p] = {"step": torch.tensor(float(a["step"])), "exp_avg": tensor(a["exp_avg"]),
                        "exp_avg_sq": tensor(a["exp_avg_sq"])}
    before = {n: p.detach().clone() for n, p in P.items()}
    opt.step()
    src.ascend(src_grads, src_lr)
    return {"terms": dict({k: float(v) for k, v in terms.items()}, total=float(total)),
            "lr": lr, "source_lr": src_lr, "grad_norm_components": norm_comp, "grad_norm_ci_fns": norm_ci,
            "grads": {n: out_json(p.grad) for n, p in P.items()},
            "updates": {n: out_json(p.detach() - before[n]) for n, p in P.items()},
            "sources": {"s": [out_json(x) for x in src.s], "s_delta": [out_json(x) for x in src.s_delta],
                        "m1": [out_json(x) for x in src.m1], "m2": [out_json(x) for x in src.m2], "t": src.t}}


def main():
    with open(sys.argv[1]) as f:
        inp = json.load(f)
    out = cross_check(inp)
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
