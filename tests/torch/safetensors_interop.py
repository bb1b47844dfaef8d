#!/usr/bin/env python3
"""safetensors interop between PyTorch and the C++ engine (driven by tests/test_safetensors.cpp).

  safetensors_interop.py write PATH   write the reference tensors below from torch
  safetensors_interop.py read PATH    read a file written by the C++ test and check it

Uses the `safetensors` package when it is installed; otherwise (Debian's torch 1.13 has
none) a small reader/writer built on json + struct, following the format description:
8-byte little-endian header length, JSON header, row-major little-endian data buffer.
Exit codes: 0 ok, 1 mismatch, 77 torch is not installed (the C++ test then skips).
"""
import json
import struct
import sys

try:
    import torch
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(77)

try:
    import safetensors.torch as st  # type: ignore
except ImportError:
    st = None

DTYPE_NAMES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
TORCH_DTYPES = {v: k for k, v in DTYPE_NAMES.items()}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_plain(path, tensors, metadata):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensor_bytes(tensors[name])
        header[name] = {"dtype": DTYPE_NAMES[tensors[name].dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def read_plain(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    buf = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = TORCH_DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(buf[b:e]), dtype=dt) if e > b else torch.zeros(0, dtype=dt)
        out[name] = t.reshape(info["shape"])
    return out, metadata


def reference_tensors():
    # Exactly representable values, so both sides can compare bit for bit.
    return {
        "w_f32": (torch.arange(6, dtype=torch.float64) * 0.5 - 1.0).reshape(2, 3).float(),
        "w_f64": torch.tensor([(i - 3) / 7.0 for i in range(8)], dtype=torch.float64).reshape(2, 2, 2),
        "h_f16": torch.tensor([1.5, -2.25, 65504.0, 2.0 ** -20, float("-inf")], dtype=torch.float16),
        "b_bf16": torch.tensor([1.0, -3.140625, 2.0 ** 100], dtype=torch.bfloat16),
        "i64": torch.tensor([0, -3, 6, 2 ** 40], dtype=torch.int64),
        "i32": torch.tensor([[7], [-8]], dtype=torch.int32),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "read"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "write":
        tensors, meta = reference_tensors(), {"source": "torch", "format": "pt"}
        if st is not None:
            st.save_file(tensors, path, metadata=meta)
        else:
            write_plain(path, tensors, meta)
        return 0
    # read: the C++ side wrote a_f32[i] = float((i - 3) / 7), shape [3, 4], and
    # b_f64[i] = (i - 3) / 7 * 1e-3, shape [2, 1, 3], metadata {"writer": "pd", "step": "42"}.
    tensors, meta = read_plain(path)
    want_a = torch.tensor([(i - 3) / 7.0 for i in range(12)], dtype=torch.float64).float().reshape(3, 4)
    want_b = torch.tensor([(i - 3) / 7.0 * 1e-3 for i in range(6)], dtype=torch.float64).reshape(2, 1, 3)
    problems = []
    if set(tensors) != {"a_f32", "b_f64"}:
        problems.append("tensor names %s" % sorted(tensors))
    for name, want in (("a_f32", want_a), ("b_f64", want_b)):
        got = tensors.get(name)
        if got is None or got.dtype != want.dtype or not torch.equal(got, want):
            problems.append("%s: got %s want %s" % (name, got, want))
    if meta != {"writer": "pd", "step": "42"}:
        problems.append("metadata %s" % meta)
    if st is not None:  # the official reader must accept our file too
        official = st.load_file(path)
        if not all(torch.equal(official[k], tensors[k]) for k in tensors):
            problems.append("official safetensors reader disagrees")
    if problems:
        print("safetensors interop mismatch: " + "; ".join(problems), file=sys.stderr)
        return 1
    print("read ok (%s reader)" % ("official" if st is not None else "plain-python"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
