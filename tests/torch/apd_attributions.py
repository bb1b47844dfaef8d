#!/usr/bin/python3
"""float64 PyTorch reference of APD's attributions, batch top-k and losses on TMS (METHODS 2).

usage: apd_attributions.py IN.json OUT.json

Every tensor is {"shape": [...], "data": [flat row-major doubles]}.

IN.json
  "W1" [n_h, n_f], "b" [n_f], "x" [B, n_f]     TMS weight, linear2 bias, batch
  "identity" (bool)                            true: a hidden layer "I" [n_h, n_h] sits between
  "I" [n_h, n_h]                               (only with identity) its weight, decomposed too
  "V_linear1" [n_f, C m], "U_linear1" [C m, n_h]
  "V_hidden" [n_h, C m], "U_hidden" [C m, n_h] (only with identity)
  "C", "m", "topk", "p"                        components, rank, batch top-k, Schatten exponent

The target is y = ReLU(((x W1^T) I^T) W1 + b): decomposed layers l = linear1 (weight W1),
hidden (weight I), linear2 (weight W1^T, bias b), each with weight W_l [d_out, d_in].
Components use the C++ column layout: in layer l, A_{c,l} = V_l[:, c m : c m + m] [d_in, m],
B_{c,l} = U_l[c m : c m + m, :] [m, d_out], P_{c,l} = A_{c,l} B_{c,l} [d_in, d_out] (the
layer weight transposed). linear2 is tied: V_linear2 = U_linear1^T, U_linear2 = V_linear1^T.
a_l is layer l's input in the target pass; N = sum_l numel(W_l) (linear2 counts again).

OUT.json ([B, C] tensors unless stated)
  "gradient_attributions"  sum_o ( sum_l g_{l,o} . (a_l P_{c,l}) )^2, g_{l,o} = d y_o / d h_l
                           (one backward per output o to every layer output h_l); checked
                           here against brute force sum_o ( sum_l <d y_o / d W_l, P_{c,l}^T> )^2
                           (one backward per (b, o) to the weight matrices): the script exits 1
                           unless they agree to 1e-10 x max(1, max |attr|)
  "activation_attributions"  sum_l || a_l P_{c,l} ||^2
  "ablation_attributions"  sum_o (f_all(x) - f_without_c(x))_o^2, f_all with weight sum_c P_{c,l}
                           in every layer (biases kept), f_without_c without component c
  "K"                      floor(topk B), clamped to [0, B C]
  "topk_mask"              1 at the K largest gradient attributions over all of [B, C]
                           (ties: lower flat index first)
  "topk_gap"               K-th largest minus (K+1)-th largest attribution (null if K is 0 or B C)
  "faithfulness"           sum_l ||W_l^T - sum_c P_{c,l}||_F^2 / N
  "minimality"             MSE(f_topk(x), y), f_topk's layers sum_c s_{b,c} (a A_{c,l}) B_{c,l} + b_l
  "simplicity"             sum_{b,l,c,k} (s_{b,c} ||A_{c,l,:,k}||^2 ||B_{c,l,k,:}||^2 + 1e-16)^{p/2} / (N B)
  "grad_<loss>_<name>"     d loss / d <name>, loss in faithfulness, minimality, simplicity and
                           total (= their unweighted sum), name in V_linear1, U_linear1 and
                           (with identity) V_hidden, U_hidden; shaped like <name>
Exit codes: 0 ok, 1 the two gradient attributions disagree, 2 bad input, 77 torch missing.
"""
import json
import math
import sys

try:
    import torch
except ImportError:
    print("apd_attributions.py: PyTorch is not installed", file=sys.stderr)
    sys.exit(77)

torch.set_default_dtype(torch.float64)
AGREE_TOL = 1e-10


def fail_input(msg):
    print("apd_attributions.py: bad input: " + msg, file=sys.stderr)
    sys.exit(2)


def tensor(spec, name):
    t = torch.tensor(spec["data"], dtype=torch.float64)
    if t.numel() != math.prod(spec["shape"]):
        fail_input(f"{name} has {t.numel()} values for shape {spec['shape']}")
    return t.reshape(spec["shape"])


def out_tensor(t):
    return {"shape": list(t.shape), "data": t.detach().flatten().tolist()}


class Layer:
    """A decomposed layer: target weight W [d_out, d_in], bias or None, factor getter."""

    def __init__(self, name, W, bias, factors):
        self.name, self.W, self.bias, self.factors = name, W, bias, factors

    def AB(self, C, m):
        """A [C, d_in, m], B [C, m, d_out] from the current (V, U)."""
        V, U = self.factors()
        return V.reshape(V.shape[0], C, m).permute(1, 0, 2), U.reshape(C, m, U.shape[1])

    def P(self, C, m):
        A, B = self.AB(C, m)
        return A @ B  # [C, d_in, d_out]


def load(path):
    with open(path) as f:
        d = json.load(f)
    for k in ["W1", "b", "x", "identity", "V_linear1", "U_linear1", "C", "m", "topk", "p"]:
        if k not in d:
            fail_input(f"missing key '{k}'")
    C, m = int(d["C"]), int(d["m"])
    T = {k: tensor(d[k], k) for k in ["W1", "b", "x", "V_linear1", "U_linear1"]}
    ident = bool(d["identity"])
    if ident:
        for k in ["I", "V_hidden", "U_hidden"]:
            if k not in d:
                fail_input(f"identity is true but '{k}' is missing")
            T[k] = tensor(d[k], k)
    n_h, n_f = T["W1"].shape
    want = {"b": [n_f], "x": [T["x"].shape[0], n_f], "V_linear1": [n_f, C * m], "U_linear1": [C * m, n_h]}
    if ident:
        want.update({"I": [n_h, n_h], "V_hidden": [n_h, C * m], "U_hidden": [C * m, n_h]})
    for k, s in want.items():
        if list(T[k].shape) != s:
            fail_input(f"{k} has shape {list(T[k].shape)}, expected {s}")
    for k in [k for k in T if k[:2] in ("V_", "U_")]:
        T[k].requires_grad_(True)
    return T, ident, C, m, float(d["topk"]), float(d["p"])


def make_layers(T, ident):
    V1, U1 = T["V_linear1"], T["U_linear1"]
    layers = [Layer("linear1", T["W1"], None, lambda: (V1, U1))]
    if ident:
        layers.append(Layer("hidden", T["I"], None, lambda: (T["V_hidden"], T["U_hidden"])))
    layers.append(Layer("linear2", T["W1"].t().clone(), T["b"], lambda: (U1.t(), V1.t())))
    return layers


def forward(x, layers, layer_fn):
    """ReLU of the layer chain; layer_fn(i, layer, a) -> layer output without bias.
    Returns (y, [a_l])."""
    a, inputs = x, []
    for i, l in enumerate(layers):
        inputs.append(a)
        a = layer_fn(i, l, a)
        if l.bias is not None:
            a = a + l.bias
    return torch.relu(a), inputs


def component_outputs(layers, inputs, C, m):
    """[a_l P_{c,l}] per layer: [B, C, d_out_l] (constant)."""
    with torch.no_grad():
        return [torch.einsum("bi,cio->bco", a, l.P(C, m)) for l, a in zip(layers, inputs)]


def gradient_attributions(x, layers, C, m):
    """METHODS 2: zero leaves z_l on the layer outputs; one backward of y_o to every z_l."""
    zs = []

    def with_leaf(i, l, a):
        h = a @ l.W.t()
        zs.append(torch.zeros_like(h, requires_grad=True))
        return h + zs[-1]

    y, inputs = forward(x, layers, with_leaf)
    comp = component_outputs(layers, [a.detach() for a in inputs], C, m)
    B, O = y.shape
    dots = torch.zeros(B, C, O)
    for o in range(O):
        onehot = torch.zeros_like(y)
        onehot[:, o] = 1
        gs = torch.autograd.grad(y, zs, onehot, retain_graph=True)
        for g, co in zip(gs, comp):
            dots[:, :, o] += torch.einsum("bcd,bd->bc", co, g)
    return dots.square().sum(2), y.detach(), [a.detach() for a in inputs]


def gradient_attributions_brute_force(x, layers, C, m):
    """sum_o (sum_l <d y_{b,o} / d W_l, P_{c,l}^T>)^2 with one backward per (b, o) to the weight
    matrices themselves (linear2's W1^T is a matrix of its own)."""
    Ws = [l.W.detach().clone().requires_grad_(True) for l in layers]
    y, _ = forward(x, layers, lambda i, l, a: a @ Ws[i].t())
    Ps = [l.P(C, m).detach() for l in layers]  # [C, d_in, d_out]
    B, O = y.shape
    dots = torch.zeros(B, C, O)
    for b in range(B):
        for o in range(O):
            gW = torch.autograd.grad(y[b, o], Ws, retain_graph=True, allow_unused=True)
            for g, P in zip(gW, Ps):
                if g is not None:  # [d_out, d_in] . P^T for every c
                    dots[b, :, o] += torch.einsum("oi,cio->c", g, P)
    return dots.square().sum(2)


def activation_attributions(layers, inputs, C, m):
    return sum(co.square().sum(2) for co in component_outputs(layers, inputs, C, m))


def ablation_attributions(x, layers, C, m):
    """(f_all - f_without_c)^2 summed over outputs, weights sum_c keep_c P_{c,l}."""
    with torch.no_grad():
        Ps = [l.P(C, m) for l in layers]

        def f(keep):  # keep [C]
            return forward(x, layers, lambda i, l, a: a @ torch.einsum("c,cio->io", keep, Ps[i]))[0]

        y_all = f(torch.ones(C))
        cols = []
        for c in range(C):
            keep = torch.ones(C)
            keep[c] = 0
            cols.append((y_all - f(keep)).square().sum(1))
        return torch.stack(cols, 1)


def batch_topk(attr, topk):
    """(mask [B, C], K, gap): the K = floor(topk B) largest over the whole [B, C], ties to
    the lower flat index; gap = K-th largest - (K+1)-th largest (None when K is 0 or B C)."""
    B, C = attr.shape
    K = int(min(max(math.floor(topk * B), 0), B * C))
    vals = attr.flatten().tolist()
    order = sorted(range(B * C), key=lambda i: (-vals[i], i))
    mask = torch.zeros(B * C)
    mask[order[:K]] = 1
    gap = vals[order[K - 1]] - vals[order[K]] if 0 < K < B * C else None
    return mask.reshape(B, C), K, gap


def apd_losses(x, y_target, layers, s, C, m, p):
    """faithfulness, minimality, simplicity at the top-k mask s [B, C] (constant)."""
    N = sum(l.W.numel() for l in layers)
    B = x.shape[0]
    faith = sum((l.W.t() - l.P(C, m).sum(0)).square().sum() for l in layers) / N

    def topk_layer(i, l, a):  # sum_c s_{b,c} (a A_c) B_c
        A, Bf = l.AB(C, m)
        h = torch.einsum("bi,cik->bck", a, A) * s[:, :, None]
        return torch.einsum("bck,cko->bo", h, Bf)

    y_topk, _ = forward(x, layers, topk_layer)
    minimality = (y_topk - y_target).square().mean()
    simp = 0.0
    for l in layers:
        A, Bf = l.AB(C, m)
        norms = A.square().sum(1) * Bf.square().sum(2)  # [C, m]: ||A_{c,:,k}||^2 ||B_{c,k,:}||^2
        simp = simp + (s[:, :, None] * norms[None] + 1e-16).pow(p / 2).sum()
    return {"faithfulness": faith, "minimality": minimality, "simplicity": simp / (N * B)}


def main():
    if len(sys.argv) != 3:
        print("usage: apd_attributions.py IN.json OUT.json", file=sys.stderr)
        sys.exit(2)
    T, ident, C, m, topk, p = load(sys.argv[1])
    layers = make_layers(T, ident)
    x = T["x"]
    grad_attr, y, inputs = gradient_attributions(x, layers, C, m)
    brute = gradient_attributions_brute_force(x, layers, C, m)
    err = (grad_attr - brute).abs().max().item()
    scale = max(1.0, grad_attr.abs().max().item())
    if not err <= AGREE_TOL * scale:
        print(f"apd_attributions.py: gradient attributions by the METHODS formula and by brute force "
              f"differ by {err:.3e} (scale {scale:.3e})", file=sys.stderr)
        sys.exit(1)
    mask, K, gap = batch_topk(grad_attr, topk)
    out = {"gradient_attributions": out_tensor(grad_attr),
           "activation_attributions": out_tensor(activation_attributions(layers, inputs, C, m)),
           "ablation_attributions": out_tensor(ablation_attributions(x, layers, C, m)),
           "K": K, "topk_mask": out_tensor(mask), "topk_gap": gap}
    terms = apd_losses(x, y, layers, mask, C, m, p)
    terms["total"] = terms["faithfulness"] + terms["minimality"] + terms["simplicity"]
    names = [k for k in ["V_linear1", "U_linear1", "V_hidden", "U_hidden"] if k in T]
    for loss, v in terms.items():
        if loss != "total":
            out[loss] = v.item()
        grads = torch.autograd.grad(v, [T[n] for n in names], retain_graph=True, allow_unused=True)
        for n, g in zip(names, grads):
            out[f"grad_{loss}_{n}"] = out_tensor(g if g is not None else torch.zeros_like(T[n]))
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
