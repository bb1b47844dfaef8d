#!/usr/bin/env python3
"""PyTorch eager reference for the toolkit's tiny LM (models/transformers.hpp) and TMS.

Same architecture and parameter names as the C++ models, so weights move both ways as
safetensors:
  embed.weight [V, D]; blocks.i.attn_norm.weight [D]; blocks.i.attn.{q,k,v,o}_proj.weight
  [D, D]; blocks.i.mlp_norm.weight [D]; blocks.i.mlp.c_fc.weight [F, D];
  blocks.i.mlp.down_proj.weight [D, F]; norm.weight [D]; lm_head tied to embed.

  tiny_lm.py bench [--vocab V --d-model D ... --threads 1,2 --seconds S]
      times the same training step as `pd bench train_tiny_lm` (random token batch,
      forward, cross-entropy, backward, AdamW) and prints one JSON line.
  tiny_lm.py export DIR
      trains a small tiny LM and a TMS for a few steps in PyTorch, writes
      DIR/tiny_lm.safetensors, DIR/tms.safetensors (weights + "model_config" metadata) and
      DIR/reference.safetensors (input ids / x and the PyTorch outputs) for the C++ test.
Exit code 77 when torch is missing (the C++ test then skips).
"""
import argparse
import json
import math
import struct
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(77)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, base):
    # x: [B, H, T, Dh]; split-half pairs (i, i + Dh/2) rotated by t * base^(-2i/Dh)
    T, Dh = x.shape[-2], x.shape[-1]
    h = Dh // 2
    theta = base ** (-2.0 * torch.arange(h, dtype=torch.float64) / Dh)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attn(nn.Module):
    def __init__(self, d, n_heads, base):
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.h, self.base = n_heads, base

    def forward(self, x):
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.h, D // self.h).transpose(1, 2)  # [B, H, T, Dh]
        q = rope(split(self.q_proj(x)), self.base)
        k = rope(split(self.k_proj(x)), self.base)
        v = split(self.v_proj(x))
        s = q @ k.transpose(-1, -2) / math.sqrt(D // self.h)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        a = s.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.o_proj(a.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.c_fc = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.c_fc(x)))  # exact (erf) GELU, as ad::gelu_erf


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.attn = Attn(c["d_model"], c["n_heads"], c["rope_base"])
        self.mlp_norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.mlp = MLP(c["d_model"], c["d_mlp"])

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TinyLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed = nn.Embedding(c["vocab"], c["d_model"])
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["n_layers"])])
        self.norm = RMSNorm(c["d_model"], c["norm_eps"])
        nn.init.normal_(self.embed.weight, std=0.02)
        for b in self.blocks:
            for lin in [b.attn.q_proj, b.attn.k_proj, b.attn.v_proj, b.mlp.c_fc]:
                nn.init.normal_(lin.weight, std=0.02)
            for lin in [b.attn.o_proj, b.mlp.down_proj]:
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * c["n_layers"]))

    def forward(self, ids):
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x)
        return self.norm(x) @ self.embed.weight.t()  # tied head


class TMS(nn.Module):
    """h = W x; y = ReLU(W^T h + b). Names as the C++ TMS: linear1.weight, linear2.bias."""

    def __init__(self, n_features, n_hidden):
        super().__init__()
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
        self.linear2 = nn.Module()
        self.linear2.bias = nn.Parameter(torch.zeros(n_features))
        nn.init.xavier_normal_(self.linear1.weight)

    def forward(self, x):
        h = self.linear1(x)
        return F.relu(h @ self.linear1.weight + self.linear2.bias)


def lm_config(a):
    return {"type": "tiny_lm", "vocab": a.vocab, "d_model": a.d_model, "n_heads": a.n_heads, "n_layers": a.n_layers,
            "d_mlp": a.d_mlp, "max_len": a.seq_len, "rope_base": 10000.0, "norm_eps": 1e-6}


# ---- safetensors (plain writer: Debian's torch has no safetensors package) ----------------
def save_safetensors(path, tensors, metadata):
    names = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32"}
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
    import os
    os.replace(path + ".tmp", path)


def bench(a):
    c = lm_config(a)
    results = {}
    for threads in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = TinyLM(c)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        g = torch.Generator().manual_seed(1)

        def step():
            ids = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1), generator=g)
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=False)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        step()
        step()
        times, start = [], time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < a.seconds:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        med = times[len(times) // 2]
        results[threads] = {"steps_per_s": 1.0 / med, "tokens_per_s": a.batch * a.seq_len / med,
                            "best_steps_per_s": 1.0 / times[0], "reps": len(times)}
    best = max(results, key=lambda t: results[t]["tokens_per_s"])
    out = dict(results[best])
    out["threads"] = best
    out["per_threads"] = {str(k): round(v["tokens_per_s"], 1) for k, v in results.items()}
    out["torch"] = torch.__version__
    print(json.dumps(out))


def export(a):
    import os
    os.makedirs(a.dir, exist_ok=True)
    torch.manual_seed(0)
    c = {"type": "tiny_lm", "vocab": 13, "d_model": 16, "n_heads": 2, "n_layers": 2, "d_mlp": 40, "max_len": 12,
         "rope_base": 10000.0, "norm_eps": 1e-6}
    lm = TinyLM(c)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(20):  # a few real training steps so the weights are not at their init
        ids = torch.randint(0, 13, (4, 13))
        loss = F.cross_entropy(lm(ids[:, :-1]).reshape(-1, 13), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids = torch.randint(0, 13, (3, 12))
    with torch.no_grad():
        logits = lm(ids)
    save_safetensors(os.path.join(a.dir, "tiny_lm.safetensors"), dict(lm.state_dict()),
                     {"model_config": json.dumps(c)})
    tms = TMS(5, 2)
    opt = torch.optim.AdamW(tms.parameters(), lr=5e-3, weight_decay=0.01)
    for _ in range(50):
        x = torch.rand(256, 5) * (torch.rand(256, 5) < 0.05)
        loss = F.mse_loss(tms(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.rand(6, 5)
    with torch.no_grad():
        y = tms(x)
    save_safetensors(os.path.join(a.dir, "tms.safetensors"), dict(tms.state_dict()),
                     {"model_config": json.dumps({"type": "tms", "n_features": 5, "n_hidden": 2, "n_hidden_layers": 0})})
    save_safetensors(os.path.join(a.dir, "reference.safetensors"),
                     {"lm_ids": ids.to(torch.int32), "lm_logits": logits, "tms_x": x, "tms_y": y}, {})


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    for k, v in [("vocab", 43), ("d-model", 128), ("n-heads", 4), ("n-layers", 2), ("d-mlp", 512), ("seq-len", 128),
                 ("batch", 32)]:
        b.add_argument("--" + k, type=int, default=v)
    b.add_argument("--threads", default="1,2")
    b.add_argument("--seconds", type=float, default=5.0)
    e = sub.add_parser("export")
    e.add_argument("dir")
    a = p.parse_args()
    bench(a) if a.cmd == "bench" else export(a)


if __name__ == "__main__":
    main()
