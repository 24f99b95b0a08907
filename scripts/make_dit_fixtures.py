#!/usr/bin/env python3
"""Writes the DiT fixtures to tests/fixtures/dit/ (read by tests/test_dit.cpp).

A tiny random diffusers DiTTransformer2DModel (sample_size 8, patch 2, 4 -> 8 channels, 2 layers, 2 heads of
8 channels: hidden 16, 10 classes) is built at a fixed seed. Every parameter is redrawn from N(0, 0.1) (the
default init zeroes the adaLN and output layers, which would make a parity test vacuous) and rounded to
float16; references are computed in float32 from exactly those values. diffusers' defaults are kept,
including norm_eps 1e-5 of the MLP-branch LayerNorm (norm3; the official DiT and Atelier use 1e-6).

  weights_diffusers.safetensors  DiTTransformer2DModel.state_dict() (float16). Each block carries its own
                                 copy of the timestep/class embedders (all equal here, as in converted
                                 checkpoints); pos_embed is a non-persistent buffer, so it is absent.
  io.safetensors                 latents [2,4,8,8] (float16 values), timesteps [2] float (10, 500),
                                 labels [2] int64 (3 and the null class 10), sample [2,8,8,8] float32 =
                                 model(latents, timesteps, labels).sample in eval mode.
                                 Metadata "config": the Atelier DiTConfig of the model (JSON).
  official.pt                    the same weights with official facebookresearch/DiT names, converted here
                                 in Python independently of the C++ table, torch.save'd as an OrderedDict in
                                 float32, plus pos_embed [1,16,16] (as the official state dict holds it).
  official_train.pt              {"model": ..., "ema": ..., "opt": {...}, "args": Namespace(...)} as
                                 DiT's train.py writes it; "ema" holds the weights (float16; pos_embed
                                 float32), "model" the same shapes as zero-stride zeros (tiny on disk),
                                 so a loader that picks "model." instead of "ema." gives another output.
  official_io.safetensors        sample [2,8,8,8] float32: the official facebookresearch/DiT model (timestep
                                 shift 0, all LayerNorm eps 1e-6) on official.pt's weights and io's inputs.
  dit_xl2_official_keys.json     [[name, shape, dtype], ...] of DiT_XL_2().state_dict() in order (DiT with
                                 depth 28, hidden 1152, patch 2, 16 heads, 32x32x4 input, 1000 classes).
  The last two need the official models.py (--dit-repo, below) and are kept as they are without it.

--dit-repo PATH: a checkout of facebookresearch/DiT (its models.py needs timm; fetched from
facebookresearch/DiT@00d70ac). The script imports models.py from PATH at run time (the DiT code is never
copied into this repository), runs the official DiT on official.pt's weights, and checks that, with its
timestep embedding switched to diffusers' frequency shift, it agrees with diffusers: this validates the
Python name conversion.

Usage: /work/fixtures-venv/bin/python scripts/make_dit_fixtures.py [--dit-repo /tmp/dit_ref]
"""
import argparse
import io
import json
import math
import os
import sys
from argparse import Namespace
from collections import OrderedDict

import torch
from diffusers import DiTTransformer2DModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "dit")

CONFIG = dict(
    sample_size=8,
    patch_size=2,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    num_attention_heads=2,
    attention_head_dim=8,
    num_embeds_ada_norm=10,
)
HIDDEN = CONFIG["num_attention_heads"] * CONFIG["attention_head_dim"]

# The Atelier DiTConfig of the model (diffusers' Timesteps use downscale_freq_shift=1).
ATELIER_CONFIG = dict(
    input_size=CONFIG["sample_size"],
    patch_size=CONFIG["patch_size"],
    in_channels=CONFIG["in_channels"],
    hidden_size=HIDDEN,
    depth=CONFIG["num_layers"],
    num_heads=CONFIG["num_attention_heads"],
    mlp_ratio=4.0,
    class_dropout_prob=0.1,
    num_classes=CONFIG["num_embeds_ada_norm"],
    learn_sigma=True,
    timestep_freq_shift=1,
)


def build_model():
    torch.manual_seed(1234)
    model = DiTTransformer2DModel(**CONFIG).eval()
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((0.1 * torch.randn(p.shape, generator=g)).half().float())
        # Every block's embedder copy equals block 0's, as in checkpoints converted from the official model.
        emb0 = model.transformer_blocks[0].norm1.emb
        for block in model.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(emb0.state_dict())
    return model


def to_official(sd):
    """diffusers DiTTransformer2DModel names -> facebookresearch/DiT names (q/k/v fused into qkv)."""
    out = OrderedDict()
    emb = "transformer_blocks.0.norm1.emb."
    for suffix in ("weight", "bias"):
        out[f"x_embedder.proj.{suffix}"] = sd[f"pos_embed.proj.{suffix}"]
        out[f"t_embedder.mlp.0.{suffix}"] = sd[f"{emb}timestep_embedder.linear_1.{suffix}"]
        out[f"t_embedder.mlp.2.{suffix}"] = sd[f"{emb}timestep_embedder.linear_2.{suffix}"]
    out["y_embedder.embedding_table.weight"] = sd[f"{emb}class_embedder.embedding_table.weight"]
    for n in range(CONFIG["num_layers"]):
        b, o = f"transformer_blocks.{n}.", f"blocks.{n}."
        for suffix in ("weight", "bias"):
            out[f"{o}attn.qkv.{suffix}"] = torch.cat([sd[f"{b}attn1.to_{x}.{suffix}"] for x in "qkv"], 0)
            out[f"{o}attn.proj.{suffix}"] = sd[f"{b}attn1.to_out.0.{suffix}"]
            out[f"{o}mlp.fc1.{suffix}"] = sd[f"{b}ff.net.0.proj.{suffix}"]
            out[f"{o}mlp.fc2.{suffix}"] = sd[f"{b}ff.net.2.{suffix}"]
            out[f"{o}adaLN_modulation.1.{suffix}"] = sd[f"{b}norm1.linear.{suffix}"]
    for suffix in ("weight", "bias"):
        out[f"final_layer.linear.{suffix}"] = sd[f"proj_out_2.{suffix}"]
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = sd[f"proj_out_1.{suffix}"]
    return out


def run_official(dit_repo, official, inputs, sample):
    """Runs facebookresearch/DiT's model on the converted weights. Returns its output and the models module.

    Also checks it against diffusers with the official timestep embedding switched to diffusers' frequency
    shift (the only architectural difference besides norm3's eps): this validates to_official().
    """
    sys.path.insert(0, os.path.abspath(dit_repo))
    import models  # facebookresearch/DiT models.py

    dit = models.DiT(
        input_size=CONFIG["sample_size"],
        patch_size=CONFIG["patch_size"],
        in_channels=CONFIG["in_channels"],
        hidden_size=HIDDEN,
        depth=CONFIG["num_layers"],
        num_heads=CONFIG["num_attention_heads"],
        num_classes=CONFIG["num_embeds_ada_norm"],
    ).eval()
    dit.load_state_dict(official, strict=True)
    with torch.no_grad():
        out_official = dit(*inputs).contiguous()

    original = models.TimestepEmbedder.timestep_embedding

    def shifted_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - 1))
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    models.TimestepEmbedder.timestep_embedding = staticmethod(shifted_embedding)
    with torch.no_grad():
        out_shifted = dit(*inputs)
    models.TimestepEmbedder.timestep_embedding = original
    diff = (out_shifted - sample).abs().max().item()
    print(f"official DiT (diffusers' timestep shift) vs diffusers: max abs diff {diff:.3g}")
    assert diff <= 1e-5 * max(1.0, sample.abs().max().item()), diff
    print(f"official DiT vs diffusers (timestep shift 0 vs 1): max abs diff {(out_official - sample).abs().max():.3g}")
    return out_official, models


def xl2_keys(models):
    with torch.device("meta"):
        model = models.DiT(depth=28, hidden_size=1152, patch_size=2, num_heads=16)  # models.DiT_XL_2()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    total = sum(math.prod(s) for _, s, _ in keys)
    print(f"DiT-XL/2: {len(keys)} tensors, {total} values (pos_embed included)")
    return keys


def save_torch(obj, name):
    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(buf.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dit-repo", help="checkout of facebookresearch/DiT (for its models.py)")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)

    model = build_model()
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    assert not any(k.startswith("pos_embed.pos_embed") for k in sd), "pos_embed is expected to be non-persistent"
    save_file({k: v.half() for k, v in sd.items()}, os.path.join(OUT, "weights_diffusers.safetensors"))

    g = torch.Generator().manual_seed(7)
    latents = torch.randn(2, 4, 8, 8, generator=g).half().float()
    timesteps = torch.tensor([10.0, 500.0])
    labels = torch.tensor([3, CONFIG["num_embeds_ada_norm"]])  # a class and the null class
    with torch.no_grad():
        sample = model(latents, timesteps, labels).sample.contiguous()
    io_tensors = {"latents": latents.half(), "timesteps": timesteps, "labels": labels, "sample": sample}
    save_file(io_tensors, os.path.join(OUT, "io.safetensors"), metadata={"config": json.dumps(ATELIER_CONFIG)})

    official = to_official(sd)
    official["pos_embed"] = model.pos_embed.pos_embed.detach().clone()  # [1, T, D], float32 sincos
    save_torch(official, "official.pt")
    ema = OrderedDict((k, v if k == "pos_embed" else v.half()) for k, v in official.items())
    zeros = OrderedDict((k, torch.zeros((), dtype=torch.float16).expand(v.shape)) for k, v in official.items())
    train_args = Namespace(model="DiT-T/2", image_size=64, num_classes=CONFIG["num_embeds_ada_norm"], epochs=1)
    opt = {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0, "params": list(range(len(official)))}]}
    save_torch({"model": zeros, "ema": ema, "opt": opt, "args": train_args}, "official_train.pt")

    if args.dit_repo:
        sample_official, models = run_official(args.dit_repo, official, (latents, timesteps, labels), sample)
        save_file({"sample": sample_official}, os.path.join(OUT, "official_io.safetensors"))
        with open(os.path.join(OUT, "dit_xl2_official_keys.json"), "w") as f:
            json.dump(xl2_keys(models), f, separators=(",", ":"))
    for f in os.listdir(OUT):
        os.chmod(os.path.join(OUT, f), 0o644)

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(sd)} diffusers tensors, {sum(v.numel() for v in sd.values())} values; sample |.|max "
          f"{sample.abs().max().item():.4g}; fixtures {total} bytes")


if __name__ == "__main__":
    main()
