#!/usr/bin/env python3
"""Writes the safetensors parity fixtures to tests/fixtures/safetensors/ (read by tests/test_safetensors.cpp).

  all_dtypes.safetensors   every dtype of the format (F8 tensors hold all 256 bit patterns: NaN, max,
                           subnormals, -0), a zero-size tensor, a scalar (shape []) and __metadata__,
                           written by safetensors.torch.save; all_dtypes.json holds the expected values.
  unaligned.safetensors    built byte by byte: the data buffer starts at an odd file offset, so no
                           tensor is aligned to its element size; unaligned.json holds its values.
  identity.safetensors     arange-valued tensors of mixed dtypes (several of each element size, so
                           the reference writer's ordering matters) and a non-ASCII name, written by
                           safetensors.torch.save; identity.json lists name/dtype/shape. The C++ test
                           rebuilds the tensors and requires serialize() to give the same bytes.

Value references (*.json): {"metadata": {...}, "tensors": {name: {"dtype", "shape", "values"}}} with
values flattened in C order; integers and bools as JSON integers (exact, also for U64/I64 extremes),
floats as float.hex() strings ("nan", "inf", "-0x0.0p+0", ...) so they survive JSON exactly.

Metadata has a single key on purpose: the reference writer keeps __metadata__ in a Rust HashMap, so
with several keys the order (and the file's bytes) changes from run to run.

Usage: python scripts/make_safetensors_fixtures.py [--check FILE]
  --check FILE  load FILE (e.g. one written by atelier) with the reference reader and print it.
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "safetensors")

ST_NAME = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.float8_e5m2: "F8_E5M2",
    torch.float8_e4m3fn: "F8_E4M3", torch.int16: "I16", torch.uint16: "U16", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32", torch.float32: "F32",
    torch.int64: "I64", torch.uint64: "U64", torch.float64: "F64",
}


def specials(finfo_max, tiny, subnormal):
    """Float edge values for one dtype: zeros, max, smallest normal and subnormal, inf, nan, inexact."""
    return [0.0, -0.0, 1.0, -2.5, finfo_max, -finfo_max, tiny, subnormal, math.inf, -math.inf, math.nan, 0.1]


def ints(np_dtype, a, b):
    """[2, 3]: the dtype's min and max, 0, 1 and two more values."""
    info = np.iinfo(np_dtype)
    return torch.from_numpy(np.array([info.min, info.max, 0, 1, a, b], dtype=np_dtype)).reshape(2, 3)


def every_dtype():
    all_bits = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    t = {
        "bool": torch.tensor([[True, False, True], [True, False, False]]),
        "u8": ints(np.uint8, 128, 254),
        "i8": ints(np.int8, -1, 100),
        "f8_e5m2": all_bits.clone().view(torch.float8_e5m2),
        "f8_e4m3": all_bits.clone().view(torch.float8_e4m3fn),
        "i16": ints(np.int16, -1, 12345),
        "u16": ints(np.uint16, 256, 40000),
        "i32": ints(np.int32, -1, 123456789),
        "u32": ints(np.uint32, 2**31, 3_000_000_000),
        "i64": ints(np.int64, -1, 2**53 + 1),
        "u64": ints(np.uint64, 2**63, 12345678901234567890),
    }
    for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16), ("f32", torch.float32), ("f64", torch.float64)]:
        fi = torch.finfo(dtype)
        t[name] = torch.tensor(specials(fi.max, fi.tiny, fi.smallest_normal * fi.eps), dtype=dtype).reshape(3, 4)
    t["empty"] = torch.zeros(0, 3, dtype=torch.float32)
    t["scalar"] = torch.tensor(0.25, dtype=torch.float32)
    return t


def reference(tensors, metadata):
    out = {}
    for name, t in tensors.items():
        if t.is_floating_point():
            values = [float(v).hex() for v in t.to(torch.float64).flatten().tolist()]
        elif t.dtype == torch.bool:
            values = [int(v) for v in t.flatten().tolist()]
        else:
            values = t.flatten().numpy().tolist()  # exact Python ints, also for uint64
        out[name] = {"dtype": ST_NAME[t.dtype], "shape": list(t.shape), "values": values}
    return {"metadata": metadata or {}, "tensors": out}


def write(name, data):
    with open(os.path.join(OUT, name), "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def write_json(name, obj):
    """One tensor per line."""
    dump = lambda v: json.dumps(v, ensure_ascii=False)
    tensors = obj["tensors"]
    rows = [f" {dump(k)}: {dump(v)}" for k, v in tensors.items()] if isinstance(tensors, dict) else [f" {dump(v)}" for v in tensors]
    open_, close = ("{", "}") if isinstance(tensors, dict) else ("[", "]")
    write(name, f'{{"metadata": {dump(obj["metadata"])},\n"tensors": {open_}\n' + ",\n".join(rows) + f"\n{close}}}\n")


def unaligned_file():
    """Valid safetensors whose data buffer starts at an odd offset (8 + header length is odd)."""
    tensors = {
        "a_u8": torch.tensor([7], dtype=torch.uint8),
        "b_f32": torch.tensor([1.5, -2.25, math.pi], dtype=torch.float32),
        "c_f64": torch.tensor([math.e, -1e-300], dtype=torch.float64),
        "d_i16": torch.tensor([-300, 300], dtype=torch.int16),
        "e_bf16": torch.tensor([0.5, -3.0, 1e20], dtype=torch.bfloat16),
    }
    header, data, offset = {}, b"", 0
    for name, t in tensors.items():  # file order as listed: every tensor after a_u8 starts at an odd offset
        raw = t.view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": ST_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    while (8 + len(text)) % 8 != 3:  # data starts at 8k+3
        text += b" "
    blob = struct.pack("<Q", len(text)) + text + data
    back = st_load(blob)  # the reference reader accepts it, with the same values
    for name, t in tensors.items():
        assert torch.equal(back[name], t), name
    return blob, reference(tensors, None)


def identity_tensors():
    spec = [
        ("b.weight", torch.float32, [2, 3]), ("a.bias", torch.int32, [3]), ("z", torch.uint32, [2]),
        ("c", torch.float64, [2]), ("d", torch.int64, [1]), ("e", torch.uint64, [2]),
        ("f", torch.bfloat16, [4]), ("g", torch.float16, [2, 2]), ("h", torch.uint16, [1]), ("i", torch.int16, [2]),
        ("j", torch.float8_e4m3fn, [3]), ("k", torch.float8_e5m2, [2]), ("l", torch.int8, [2]),
        ("m", torch.uint8, [3]), ("n", torch.bool, [2]), ("empty", torch.float16, [0]), ("scalar", torch.float32, []),
        ("ünïcode/name ✓", torch.float32, [1]),
    ]
    tensors = {name: torch.arange(math.prod(shape), dtype=torch.float64).to(dtype).reshape(shape) for name, dtype, shape in spec}
    listing = [{"name": name, "dtype": ST_NAME[dtype], "shape": shape} for name, dtype, shape in spec]
    return tensors, listing


def check(path):
    tensors = load_file(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n)).get("__metadata__", {})
    for name, t in tensors.items():
        print(f"{name}: {ST_NAME.get(t.dtype, t.dtype)} {list(t.shape)}")
    print("metadata:", meta)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", help="read FILE with the reference reader instead of writing fixtures")
    args = parser.parse_args()
    if args.check:
        check(args.check)
        return
    os.makedirs(OUT, exist_ok=True)

    metadata = {"atelier.note": 'naïve "quoted"\nline\twith ✓ and \\ backslash'}
    tensors = every_dtype()
    write("all_dtypes.safetensors", save(tensors, metadata=metadata))
    write_json("all_dtypes.json", reference(tensors, metadata))

    blob, ref = unaligned_file()
    write("unaligned.safetensors", blob)
    write_json("unaligned.json", ref)

    tensors, listing = identity_tensors()
    metadata = {"format": "pt"}
    write("identity.safetensors", save(tensors, metadata=metadata))
    write_json("identity.json", {"metadata": metadata, "tensors": listing})

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files to {os.path.normpath(OUT)} ({total} bytes)")


if __name__ == "__main__":
    main()
