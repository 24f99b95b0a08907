#!/usr/bin/env python3
"""Writes the LoRA interoperability fixtures to tests/fixtures/lora/ (read by tests/test_lora_files.cpp).

A tiny torch model with a Conv2d and DiT-style linears (names conv, attn.qkv, attn.proj, mlp.fc1) gets a
PEFT LoRA (r 4, lora_alpha 8, targets conv, qkv, proj, fc1) with random (non-zero) lora_B, saved by PEFT's
own save_pretrained in the PEFT format. The forward of the model is:

    h = conv(x)                         x [N, 3, 4, 4] -> h [N, 8, 4, 4]
    t = h.flatten(2).transpose(1, 2)    [N, 16, 8]
    q = qkv(t)[..., :8] + proj(t)       [N, 16, 8]
    out = fc1(gelu(q))                  [N, 16, 32]

  base.safetensors            the base model's state_dict
  peft/adapter_model.safetensors, peft/adapter_config.json   PEFT's save_pretrained output
  io.safetensors              x, out_base (base model), out_lora (PEFT model, adapter active),
                              out_merged (after merge_and_unload), merged.<name> (merged weights),
                              ortho_basis_24_seed7: the orthogonal-adaptation basis of width 24, seed 7,
                              by the documented recipe (adapters/ortho.h)

Usage: /work/fixtures-venv/bin/python scripts/make_lora_fixtures.py
"""
import json
import os
import shutil
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "lora")


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 8)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = Attn()
        self.mlp = Mlp()

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)
        q = self.attn.qkv(t)[..., :8] + self.attn.proj(t)
        return self.mlp.fc1(torch.nn.functional.gelu(q))


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    model = Tiny().eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(OUT, "base.safetensors"))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        out_base = model(x)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["conv", "qkv", "proj", "fc1"], lora_dropout=0.0)
    peft_model = get_peft_model(model, config).eval()
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
        out_lora = peft_model(x)
    tmp = tempfile.mkdtemp()
    peft_model.save_pretrained(tmp)
    shutil.rmtree(os.path.join(OUT, "peft"), ignore_errors=True)
    os.makedirs(os.path.join(OUT, "peft"))
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(os.path.join(tmp, f), os.path.join(OUT, "peft", f))
    shutil.rmtree(tmp)
    merged = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        out_merged = merged(x)
    io = {"x": x, "out_base": out_base, "out_lora": out_lora, "out_merged": out_merged}
    for k, v in merged.state_dict().items():
        io["merged." + k] = v.contiguous()
    g = torch.randn(24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    q, r = torch.linalg.qr(g)
    io["ortho_basis_24_seed7"] = (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).contiguous()
    save_file(io, os.path.join(OUT, "io.safetensors"), metadata={"peft": __import__("peft").__version__})
    print("wrote", OUT, json.load(open(os.path.join(OUT, "peft", "adapter_config.json")))["target_modules"])


if __name__ == "__main__":
    main()
