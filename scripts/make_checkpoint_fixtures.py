#!/usr/bin/env python3
"""Writes small torch.save checkpoints and their reference safetensors to tests/fixtures/torch/.

Each <name>.pt has a <name>.ref.safetensors holding the same tensors under their flattened dotted
names (contiguous clones; tests/test_torch_zip.cpp compares dtype, shape and values exactly) and, as
metadata, the non-tensor leaves as atelier::flatten_checkpoint renders them.

Usage: python scripts/make_checkpoint_fixtures.py   (needs torch and safetensors; fixed seed)
"""
import argparse
import io
import os
from collections import OrderedDict

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch")


def flatten(obj, prefix=""):
    """Dotted names of the tensors in nested dicts/lists (the C++ flatten_checkpoint rules)."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(str(k), v) for k, v in enumerate(obj)]
    else:
        return {}
    out = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def save(name, obj, metadata=None, via_path=False):
    """via_path: torch.save to a file path, so the zip's top folder is the file's stem, not 'archive'."""
    path = os.path.join(OUT, name + ".pt")
    if via_path:
        torch.save(obj, path)
    else:
        buf = io.BytesIO()
        torch.save(obj, buf)
        with open(path, "wb") as f:
            f.write(buf.getvalue())
    ref = {k: v.detach().clone().contiguous() for k, v in flatten(obj).items()}
    save_file(ref, os.path.join(OUT, name + ".ref.safetensors"), metadata=metadata)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # 1. An OrderedDict state_dict (with its _metadata attribute, restored by BUILD).
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 3, 3))
    save("sequential", net.state_dict())

    # 2. A training checkpoint: nested state dicts, an argparse Namespace and a step counter.
    ema = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Conv2d(2, 3, 3))
    args = argparse.Namespace(model="DiT-S/2", image_size=32, lr=0.0001, use_ema=True)
    save("nested", {"model": net.state_dict(), "ema": ema.state_dict(), "args": args, "step": 7},
         metadata={"args": repr(args), "step": "7"})

    # 3. Views: transposed, sliced with an offset, two views of one storage, a stride-0 expand,
    #    a 0-d scalar, an empty tensor, and a list of tensors.
    base = torch.randn(4, 6)
    save("views", {
        "transposed": torch.randn(3, 5).t(),
        "sliced": torch.randn(5, 7)[1:4, 2:6],
        "shared_a": base[1],
        "shared_b": base[:, 2:4],
        "expanded": torch.randn(3).expand(2, 3),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "pair": [torch.arange(3), torch.ones(2, dtype=torch.float16)],
    })

    # 4. dtypes with typed storages (_rebuild_tensor_v2).
    x = torch.randn(2, 3) * 100
    save("dtypes", {
        "bf16": x.to(torch.bfloat16), "fp16": x.to(torch.float16), "fp64": x.double(),
        "i64": torch.tensor([-(2**40), 0, 2**62]), "i32": x.to(torch.int32), "i16": x.to(torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8), "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
    })
    # dtypes that torch writes as UntypedStorage + dtype (_rebuild_tensor_v3).
    save("v3", {
        "u16": torch.tensor([[1, 2, 65535], [300, 0, 7]], dtype=torch.uint16),
        "f8": torch.tensor([0.5, -2.0, 448.0, 0.0], dtype=torch.float8_e4m3fn),
    })

    # 5. Saved through a path: top folder "weird_name"; parameters go through _rebuild_parameter.
    save("weird_name", {"p": torch.nn.Parameter(torch.randn(2, 2)), "buf": torch.arange(4.0)[1:]}, via_path=True)


if __name__ == "__main__":
    main()
