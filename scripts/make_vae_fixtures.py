#!/usr/bin/env python3
"""Writes the AutoencoderKL parity fixtures to tests/fixtures/vae/ (read by tests/test_vae.cpp).

A tiny random diffusers AutoencoderKL (block_out_channels (4, 8, 8), layers_per_block 1, norm_num_groups 2,
latent_channels 4: 32x32x3 images -> 8x8x4 latents) is built at a fixed seed; GroupNorm affines and all
biases are perturbed so no layer is an identity or zero by initialisation. Weights are rounded to float16
(stored as float16 to keep the fixtures small) and the references are computed in float32 from exactly
those values, so the C++ model loads bit-identical weights.

  weights_diffusers.safetensors  diffusers AutoencoderKL.state_dict() names (to_q/to_k/to_v/to_out.0)
  weights_old_attn.safetensors   the same weights with the pre-0.14 attention names
                                 (query/key/value/proj_attn), as diffusers' legacy checkpoints
  weights_ldm.safetensors        the same weights with LDM/CompVis names (encoder.down.i.block.j,
                                 decoder.up.(n-1-i), mid.block_1/2, mid.attn_1.{norm,q,k,v,proj_out} as
                                 1x1 conv weights, nin_shortcut, norm_out) under "first_stage_model.",
                                 as in a full Stable Diffusion checkpoint; built by reversing
                                 diffusers/scripts/convert_vae_pt_to_diffusers.py and checked against
                                 diffusers' own convert_ldm_vae_checkpoint
  io.safetensors                 image [2,3,32,32] in [-1,1] (float16 values), mean and logvar [2,4,8,8]
                                 of encode(image).latent_dist (logvar clamped to [-30, 20] as the reference),
                                 latent [2,4,8,8] (float16 values) and decoded = decode(latent).sample
                                 [2,3,32,32] (float32)
  sd_keys.json                   {name: shape} of the default SD1/2 AutoencoderKL (block_out_channels
                                 [128,256,512,512], 2 layers per block, 32 groups), built on the meta device

The C++ test builds the model from the config stored in io.safetensors' metadata ("config").

Usage: /work/fixtures-venv/bin/python scripts/make_vae_fixtures.py
"""
import json
import os

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vae")

CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(4, 8, 8),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    norm_num_groups=2,
    sample_size=32,
    scaling_factor=0.18215,
)


def build_model():
    torch.manual_seed(1234)
    model = AutoencoderKL(**CONFIG).eval()
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return model


def to_old_attention_names(sd):
    """diffusers -> pre-0.14 attention names (inverse of ModelMixin._convert_deprecated_attention_blocks)."""
    rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    out = {}
    for k, v in sd.items():
        for new, old in rename.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        out[k] = v
    return out


def to_ldm_names(sd, num_blocks, layers_per_block):
    """diffusers -> LDM names; the table of diffusers' convert_diffusers_to_original_stable_diffusion.py."""
    pairs = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out")]
    for i in range(num_blocks):
        for j in range(layers_per_block):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < num_blocks - 1:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{num_blocks - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(layers_per_block + 1):
            pairs.append((f"decoder.up.{num_blocks - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        pairs.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]

    out = {}
    for k, v in sd.items():
        if ".attentions.0." in k:
            for ldm, diff in attn:
                k = k.replace(f"mid_block.attentions.0.{diff}", f"mid.attn_1.{ldm}")
            if v.ndim == 2:
                v = v.reshape(*v.shape, 1, 1)  # linear [C, C] -> 1x1 conv [C, C, 1, 1]
        else:
            for ldm, diff in pairs:
                k = k.replace(diff, ldm)
        out["first_stage_model." + k] = v
    return out


def sd_key_shapes():
    with torch.device("meta"):
        model = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
        )
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    model = build_model()
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    half = {k: v.half() for k, v in sd.items()}
    n = len(CONFIG["block_out_channels"])
    save_file(half, os.path.join(OUT, "weights_diffusers.safetensors"))
    save_file(to_old_attention_names(half), os.path.join(OUT, "weights_old_attn.safetensors"))
    ldm = to_ldm_names(half, n, CONFIG["layers_per_block"])
    back = convert_ldm_vae_checkpoint(ldm, CONFIG)  # diffusers' own LDM -> diffusers conversion
    assert back.keys() == half.keys() and all(torch.equal(back[k], v) for k, v in half.items())
    save_file(ldm, os.path.join(OUT, "weights_ldm.safetensors"))

    g = torch.Generator().manual_seed(7)
    image = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).half().float()
    latent = torch.randn(2, 4, 8, 8, generator=g).half().float()
    with torch.no_grad():
        posterior = model.encode(image).latent_dist
        decoded = model.decode(latent).sample
    io = {
        "image": image.half(),
        "mean": posterior.mean.contiguous(),
        "logvar": posterior.logvar.contiguous(),
        "latent": latent.half(),
        "decoded": decoded.contiguous(),
    }
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": list(CONFIG["block_out_channels"]),
        "layers_per_block": CONFIG["layers_per_block"],
        "norm_num_groups": CONFIG["norm_num_groups"],
        "scaling_factor": CONFIG["scaling_factor"],
    }
    save_file(io, os.path.join(OUT, "io.safetensors"), metadata={"config": json.dumps(config)})
    for f in os.listdir(OUT):
        os.chmod(os.path.join(OUT, f), 0o644)
    with open(os.path.join(OUT, "sd_keys.json"), "w") as f:
        json.dump(sd_key_shapes(), f, separators=(",", ":"))

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(sd)} tensors, {sum(v.numel() for v in sd.values())} parameters; fixtures {total} bytes")
    print("mean |.|max", posterior.mean.abs().max().item(), "logvar range", posterior.logvar.min().item(),
          posterior.logvar.max().item(), "decoded |.|max", decoded.abs().max().item())


if __name__ == "__main__":
    main()
